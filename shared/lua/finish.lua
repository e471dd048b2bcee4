-- Ends a running job held by the caller's token: state, outputs, usage and the announcement in one step.
-- A cancel that raced in turns a success into `canceled`, unbilled.
-- KEYS: [1] job record, [2] lease, [3] owner's usage, [4] running index, [5] owner's active jobs
-- ARGV: [1] token, [2] status, [3] micro-USD to bill, [4] finished channel, [5] seconds a day's usage is
--       kept, [6] the run's attempt, [7] the run's region, [8...] field, value pairs
-- Every run that reaches this step leaves a history entry: `finished` when it ended the job, `refused` when
-- it had lost the job meanwhile (its result is discarded), so runs and completions can be counted.
-- A billed run counts in the owner's total and in the day's (UTC, Redis clock): <usage>:day:<days since
-- 1970-01-01>, a key made here from KEYS[3] because the day is only known on the Redis clock.
-- Returns: the status it ended in | {status, 'again'} (this run had ended it: nothing changed now) |
--          'refused' (the token no longer holds the job)
--- @include "clock.lua"
--- @include "history.lua"
--- @include "webhook.lua"
--- @include "batch.lua"
local job_key, lease, usage, running, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, status, bill, finished_channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local day_ttl_s, run_attempt, run_region = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local FIRST_FIELD = 8
local SECONDS_PER_DAY = 86400

local job = redis.call('HMGET', job_key, 'status', 'token', 'cancel_requested')
-- The same token again after the job ended: this run's own write, repeated because its reply was lost.
if job[2] == token and (job[1] == 'succeeded' or job[1] == 'failed' or job[1] == 'canceled') then
  return {job[1], 'again'}
end
if job[1] ~= 'running' or job[2] ~= token then
  if job[1] then record_history(job_key, 'refused', run_region, run_attempt) end
  return 'refused'
end
if job[3] == '1' and status == 'succeeded' then
  status = 'canceled'
  bill = 0
end
local now = clock_s()
redis.call('HSET', job_key, 'status', status, 'finished_at', now)
record_history(job_key, 'finished', run_region, run_attempt)
if status ~= 'canceled' and #ARGV >= FIRST_FIELD then
  redis.call('HSET', job_key, unpack(ARGV, FIRST_FIELD))
end
if bill > 0 then
  redis.call('HSET', job_key, 'billed_micro_usd', bill)
  local day = usage .. ':day:' .. math.floor(now / SECONDS_PER_DAY)
  for _, totals in ipairs({usage, day}) do
    redis.call('HINCRBY', totals, 'runs', 1)
    redis.call('HINCRBY', totals, 'micro_usd', bill)
  end
  redis.call('EXPIRE', day, day_ttl_s)
end
redis.call('DEL', lease)
redis.call('ZREM', running, job_key)
redis.call('ZREM', active, job_key)
queue_webhook(job_key, 'completed', redis.call('HGET', job_key, 'id') .. '.completed')
count_batch_end(job_key, status, bill)
redis.call('PUBLISH', finished_channel, status)
return status
