-- A running job whose lease expired: its worker is gone (or frozen). It gets a new token, so the old run
-- can neither renew nor finish, and goes to the outbox, which the router empties by sending messages.
-- A cancel requested meanwhile ends it instead. A worker shutting down hands its run back the same way,
-- at once: it names its own token (ARGV[4]) instead of waiting for the lease to run out.
-- KEYS: [1] job record, [2] lease, [3] running index, [4] outbox, [5] queued index of ARGV[3]'s region,
--       [6] the owner's active jobs
-- ARGV: [1] new token, [2] finished channel, [3] the region the caller expects the job to be in,
--       [4] the handing-back run's token, or '' (the router: only an expired lease)
-- Returns: 'requeued' | 'held' (the lease is alive) | 'canceled' | 'not_running' | {'moved', region}
--- @include "clock.lua"
--- @include "webhook.lua"
--- @include "batch.lua"
--- @include "history.lua"
local job_key, lease, running, outbox, queued, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local new_token, finished_channel, expected_region, handing_back = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local job = redis.call('HMGET', job_key, 'status', 'cancel_requested', 'attempt', 'region', 'token')
if job[1] ~= 'running' or (handing_back ~= '' and job[5] ~= handing_back) then
  if job[1] ~= 'running' then redis.call('ZREM', running, job_key) end
  return 'not_running'
end
if handing_back ~= '' then
  redis.call('DEL', lease)
else
  local left = redis.call('PTTL', lease)
  if left > 0 then
    redis.call('ZADD', running, clock_ms() + left, job_key)
    return 'held'
  end
end
if job[4] ~= expected_region then return {'moved', job[4]} end
redis.call('ZREM', running, job_key)
if job[2] == '1' then
  redis.call('ZREM', active, job_key)
  redis.call('HSET', job_key, 'status', 'canceled', 'finished_at', clock_s())
  queue_webhook(job_key, 'completed', redis.call('HGET', job_key, 'id') .. '.completed')
  count_batch_end(job_key, 'canceled', 0)
  redis.call('PUBLISH', finished_channel, 'canceled')
  return 'canceled'
end
redis.call('HSET', job_key, 'status', 'queued', 'token', new_token, 'attempt', tonumber(job[3] or '1') + 1)
redis.call('HDEL', job_key, 'worker', 'started_at')
record_history(job_key, 'requeued', job[4])
redis.call('ZADD', outbox, clock_ms(), job_key)
redis.call('ZADD', queued, math.floor(clock_s()), job_key)
return 'requeued'
