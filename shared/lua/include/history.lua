-- Appends to a job's region history (what GET shows as `history`): where it was queued, moved, started,
-- requeued and where its runs reached their end, with the attempt and the time. Bounded: the first entry
-- and the latest ones stay. `attempt` defaults to the job's current one.
-- Needs clock.lua.
local HISTORY_MAX = 32

local function record_history(job_key, event, region, attempt)
  local history = cjson.decode(redis.call('HGET', job_key, 'history') or '[]')
  if #history >= HISTORY_MAX then table.remove(history, 2) end
  table.insert(history, {
    event = event, region = region,
    attempt = attempt or tonumber(redis.call('HGET', job_key, 'attempt')),
    at = clock_s(),
  })
  redis.call('HSET', job_key, 'history', cjson.encode(history))
end
