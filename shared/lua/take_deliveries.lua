-- Webhook deliveries whose time has come, each held for a while: a deliverer that dies mid-send leaves
-- its deliveries to come back when the hold ends (at least once), and two deliverers never take the same.
-- KEYS: [1] due set (ms)
-- ARGV: [1] most to take, [2] hold ms
-- Returns: the delivery ids, the longest due first
--- @include "clock.lua"
local due = KEYS[1]
local now = clock_ms()
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZADD', due, now + tonumber(ARGV[2]), id)
end
return ids
