-- Extends a running job's lease while the caller's token holds it, and says whether a cancel is pending.
-- KEYS: [1] job record, [2] lease, [3] running index
-- ARGV: [1] token, [2] lease ms
-- Returns: 'held' | 'cancel_requested' | 'lost' (another attempt holds it, or it ended)
--- @include "clock.lua"
local job_key, lease, running = KEYS[1], KEYS[2], KEYS[3]
local token, lease_ms = ARGV[1], tonumber(ARGV[2])

local job = redis.call('HMGET', job_key, 'status', 'token', 'cancel_requested')
if job[1] ~= 'running' or job[2] ~= token then return 'lost' end
redis.call('SET', lease, token, 'PX', lease_ms)
redis.call('ZADD', running, clock_ms() + lease_ms, job_key)
if job[3] == '1' then return 'cancel_requested' end
return 'held'
