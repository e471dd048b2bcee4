-- Moves a region's queued Celery messages to another region's queue, oldest first, keeping their order.
-- kombu publishes with LPUSH and consumes with BRPOP, so the oldest message is at the right end. Each
-- moved message's delivery_info.routing_key is rewritten: kombu restores an unacked message to the queue
-- its routing key names. Messages of pinned jobs, and of jobs whose pipeline the target does not serve,
-- stay where they are, in order.
-- A moved message that names its job and run (headers) takes the job along in the same step: while the
-- job is queued in the source region under that token, its queued-index entry moves to the target's,
-- its record says the target, and its history says `moved`. The router's re-send pass then finds in the
-- dead region only jobs whose message really was lost: one message per moved job, not two.
-- The one script that finds keys inside data: a job's record key is ARGV[9] .. the id its message names.
-- KEYS: [1] source queue, [2] target queue, [3] source region's queued index, [4] target region's
-- ARGV: [1] source routing key, [2] target routing key, [3] most messages to move, [4] the pinned header
--       as it appears in a message, [5] the pipeline header's name, [6] the target's pipelines as ",a,b,"
--       ("*": any), [7] the job header's name, [8] the token header's name, [9] a job record key without
--       its id, [10] source region, [11] target region
-- Returns: how many messages moved
--- @include "clock.lua"
--- @include "history.lua"
local source, target, source_queued, target_queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local old_key, new_key, limit, pinned_mark, pipeline_header, served =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local job_header, token_header, job_key_prefix, source_region, target_region =
  ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]

local function header(message, name)
  return string.match(message, '"' .. name .. '": "([^"]*)"')
end

local function carry_job(message)
  local job_id, token = header(message, job_header), header(message, token_header)
  if not job_id or not token then return end  -- a message from before these headers: re-sent instead
  local job_key = job_key_prefix .. job_id
  local job = redis.call('HMGET', job_key, 'status', 'region', 'token')
  -- A stale message (the job ran, ended or was requeued with a new token) leaves the job where it is.
  if job[1] ~= 'queued' or job[2] ~= source_region or job[3] ~= token then return end
  redis.call('ZREM', source_queued, job_key)
  redis.call('ZADD', target_queued, math.floor(clock_s()), job_key)
  redis.call('HSET', job_key, 'region', target_region)
  record_history(job_key, 'moved', target_region)
end

local old = '"routing_key": "' .. old_key .. '"'
local new = '"routing_key": "' .. new_key .. '"'
local moved = 0
local stay = {}
while moved < limit do
  local message = redis.call('RPOP', source)
  if not message then break end
  local pipeline = string.match(message, '"' .. pipeline_header .. '": "([^"]*)"')
  if string.find(message, pinned_mark, 1, true)
    or (pipeline and served ~= '*' and not string.find(served, ',' .. pipeline .. ',', 1, true)) then
    table.insert(stay, message)
  else
    -- the last occurrence: delivery_info is in "properties", the last member kombu writes
    local at, from = nil, 1
    repeat
      local found = string.find(message, old, from, true)
      if found then at, from = found, found + 1 end
    until not found
    if at then
      message = string.sub(message, 1, at - 1) .. new .. string.sub(message, at + #old)
    end
    redis.call('LPUSH', target, message)
    carry_job(message)
    moved = moved + 1
  end
end
-- the messages that stay go back where they were, oldest at the consuming end
for index = #stay, 1, -1 do
  redis.call('RPUSH', source, stay[index])
end
return moved
