-- A worker that does not serve the job's pipeline gives its message back: the job, still queued under
-- this token, is owed a message now, which the router sends where the pipeline is served.
-- KEYS: [1] job record, [2] outbox
-- ARGV: [1] token
-- Returns: 1 handed back | 0 the message was stale
--- @include "clock.lua"
local job_key, outbox = KEYS[1], KEYS[2]
local token = ARGV[1]

local job = redis.call('HMGET', job_key, 'status', 'token')
if job[1] ~= 'queued' or job[2] ~= token then return 0 end
redis.call('ZADD', outbox, clock_ms(), job_key)
return 1
