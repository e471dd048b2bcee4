-- A token bucket: takes `cost` tokens if there are as many, refilling at `rate` per second up to `burst`.
-- KEYS: [1] bucket (hash: tokens, at = when they were counted, ms)
-- ARGV: [1] tokens per second, [2] burst, [3] cost
-- Returns: {1 taken | 0 refused, whole tokens left, ms until `cost` tokens are there (0 when taken)}
--- @include "clock.lua"
local bucket = KEYS[1]
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local now = clock_ms()
local state = redis.call('HMGET', bucket, 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local elapsed = math.max(0, now - (tonumber(state[2]) or now))
tokens = math.min(burst, tokens + elapsed * rate / 1000)
local taken, wait_ms = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  taken = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', now)
-- A full bucket needs no key: it expires once it would have refilled.
redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
return {taken, math.floor(tokens), wait_ms}
