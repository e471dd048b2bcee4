-- Records that a queued job's message now goes to another region (a claim records where it really ran).
-- KEYS: [1] job record, [2] queued index of the target region, [3] queued index it is listed in
-- ARGV: [1] target region, [2] region it is listed in
-- Returns: 1 moved | 0 no longer queued (its entry is dropped) | {'moved', region} (it is in another
--          region than the caller thought: call again with that region's index)
--- @include "clock.lua"
--- @include "history.lua"
local job_key, target_queued, source_queued = KEYS[1], KEYS[2], KEYS[3]
local target, source = ARGV[1], ARGV[2]

local job = redis.call('HMGET', job_key, 'status', 'region')
if job[1] ~= 'queued' then
  redis.call('ZREM', source_queued, job_key)  -- ran, ended or expired meanwhile
  return 0
end
if job[2] ~= source then return {'moved', job[2]} end
redis.call('ZREM', source_queued, job_key)
redis.call('HSET', job_key, 'region', target)
redis.call('ZADD', target_queued, math.floor(clock_s()), job_key)
if source ~= target then record_history(job_key, 'moved', target) end
return 1
