-- Members of a sorted set scored in ms whose time has come, on the Redis clock.
-- KEYS: [1] sorted set (running index: lease deadlines; outbox: when a message is due)
-- ARGV: [1] most members to return
--- @include "clock.lua"
local scored = KEYS[1]
local limit = ARGV[1]

return redis.call('ZRANGEBYSCORE', scored, '-inf', clock_ms(), 'LIMIT', 0, limit)
