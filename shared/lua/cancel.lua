-- A client's cancel: a queued job ends at once; a running one is flagged for its worker to stop.
-- KEYS: [1] job record, [2] queued index of ARGV[3]'s region, [3] the owner's active jobs
-- ARGV: [1] owner, [2] finished channel, [3] the region the caller expects the job to be in
-- Returns: 'canceled_now' (it was queued: it ends now) | 'cancel_requested' | 'missing' (none, or another
--          owner's) | the terminal status it already has ('canceled' again, for one) | {'moved', region}
--- @include "clock.lua"
--- @include "webhook.lua"
--- @include "batch.lua"
local job_key, queued, active = KEYS[1], KEYS[2], KEYS[3]
local owner, finished_channel, expected_region = ARGV[1], ARGV[2], ARGV[3]

local job = redis.call('HMGET', job_key, 'status', 'owner', 'region')
if not job[1] or job[2] ~= owner then return 'missing' end
if job[1] == 'queued' then
  if job[3] ~= expected_region then return {'moved', job[3]} end
  redis.call('ZREM', queued, job_key)
  redis.call('ZREM', active, job_key)
  redis.call('HSET', job_key, 'status', 'canceled', 'finished_at', clock_s(), 'cancel_requested', '1')
  queue_webhook(job_key, 'completed', redis.call('HGET', job_key, 'id') .. '.completed')
  count_batch_end(job_key, 'canceled', 0)
  redis.call('PUBLISH', finished_channel, 'canceled')
  return 'canceled_now'
end
if job[1] == 'running' then
  redis.call('HSET', job_key, 'cancel_requested', '1')
  return 'cancel_requested'
end
return job[1]
