-- Renews a lock only while the caller holds it: a holder that stalled past the TTL must not extend its
-- successor's lock.
-- KEYS: [1] lock
-- ARGV: [1] holder, [2] TTL ms
-- Returns: 1 renewed | 0 not held by this holder
local lock = KEYS[1]
local holder, ttl_ms = ARGV[1], ARGV[2]

if redis.call('GET', lock) == holder then
  return redis.call('PEXPIRE', lock, ttl_ms)
end
return 0
