-- Moves a region's queued Celery messages to another region's queue, oldest first, keeping their order.
-- kombu publishes with LPUSH and consumes with BRPOP, so the oldest message is at the right end. Each
-- moved message's delivery_info.routing_key is rewritten: kombu restores an unacked message to the queue
-- its routing key names. Messages of pinned jobs, and of jobs whose pipeline the target does not serve,
-- stay where they are, in order.
-- KEYS: [1] source queue, [2] target queue
-- ARGV: [1] source routing key, [2] target routing key, [3] most messages to move, [4] the pinned header
--       as it appears in a message, [5] the pipeline header's name, [6] the target's pipelines as ",a,b,"
--       ("*": any)
-- Returns: how many messages moved
local source, target = KEYS[1], KEYS[2]
local old_key, new_key, limit, pinned_mark, pipeline_header, served =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

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
    moved = moved + 1
  end
end
-- the messages that stay go back where they were, oldest at the consuming end
for index = #stay, 1, -1 do
  redis.call('RPUSH', source, stay[index])
end
return moved
