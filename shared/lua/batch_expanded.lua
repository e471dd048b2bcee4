-- Every item of a batch is in: its total is known, and it is `completed` at once if they have all ended
-- (a job that ended before this step could not complete the batch: its total was not known yet).
-- KEYS: [1] batch record
-- ARGV: [1] total items
-- Returns: the batch's status
--- @include "clock.lua"
--- @include "webhook.lua"
--- @include "batch.lua"
local batch = KEYS[1]
if redis.call('HGET', batch, 'status') ~= 'expanding' then return redis.call('HGET', batch, 'status') end
redis.call('HSET', batch, 'status', 'running', 'total', ARGV[1])
complete_batch_if_done(batch)
return redis.call('HGET', batch, 'status')
