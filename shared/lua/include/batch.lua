-- A batch's counts move in the same step as its jobs' states: when a job of a batch ends, the batch
-- counts it (ended, its status, what it billed), and a batch whose items are all in and all done (ended,
-- invalid, or reused: an item key whose job an earlier batch made) is
-- `completed` then and there. Keys derive from the job record's, <prefix>:job:<id>: the batch is
-- <prefix>:batch:<batch id> (keys.py). A batch with a webhook gets its `completed` delivery in that step.
-- Needs clock.lua and webhook.lua.
local function complete_batch_if_done(batch)
  local state = redis.call('HMGET', batch, 'status', 'total', 'ended', 'invalid', 'reused')
  if state[1] ~= 'running' or not state[2] or state[2] == '' then return end
  local done = tonumber(state[3] or '0') + tonumber(state[4] or '0') + tonumber(state[5] or '0')
  if done >= tonumber(state[2]) then
    redis.call('HSET', batch, 'status', 'completed', 'completed_at', clock_s())
    queue_webhook(batch, 'completed', redis.call('HGET', batch, 'id') .. '.completed')
  end
end

local function count_batch_end(job_key, status, bill)
  local batch_id = redis.call('HGET', job_key, 'batch_id')
  if not batch_id or batch_id == '' then return end
  local batch = string.match(job_key, '^(.*):job:[^:]+$') .. ':batch:' .. batch_id
  redis.call('HINCRBY', batch, 'ended', 1)
  redis.call('HINCRBY', batch, status, 1)
  if bill > 0 then redis.call('HINCRBY', batch, 'micro_usd', bill) end
  complete_batch_if_done(batch)
end
