-- Looks at an owed message again later (nowhere can run it now); a message no longer owed stays off.
-- KEYS: [1] outbox, [2] job record
-- ARGV: [1] delay ms
--- @include "clock.lua"
local outbox, job_key = KEYS[1], KEYS[2]
local delay_ms = tonumber(ARGV[1])

return redis.call('ZADD', outbox, 'XX', clock_ms() + delay_ms, job_key)
