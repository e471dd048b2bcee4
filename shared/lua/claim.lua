-- Fenced claim: only the current token turns a queued job into a running one, with a lease.
-- KEYS: [1] job record, [2] lease, [3] running index, [4] queued index of ARGV[5]'s region
-- ARGV: [1] token, [2] worker id, [3] lease ms, [4] claiming region ('' keeps the job's),
--       [5] the region the caller expects the job to be indexed in
-- Returns: {'claimed', the record as HGETALL} | 'missing' | 'stale' | 'not_queued'
--          | {'moved', region} (call again with that region's queued index)
--- @include "clock.lua"
--- @include "history.lua"
--- @include "webhook.lua"
local job_key, lease, running, queued = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token, worker, lease_ms, claiming_region, expected_region =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]

local job = redis.call('HMGET', job_key, 'status', 'token', 'region')
if not job[1] then return 'missing' end
if job[2] ~= token then return 'stale' end
if job[1] ~= 'queued' then return 'not_queued' end
if job[3] ~= expected_region then return {'moved', job[3]} end
redis.call('ZREM', queued, job_key)
redis.call('HSET', job_key, 'status', 'running', 'started_at', clock_s(), 'worker', worker)
if claiming_region ~= '' then redis.call('HSET', job_key, 'region', claiming_region) end
record_history(job_key, 'started', redis.call('HGET', job_key, 'region'))
redis.call('SET', lease, token, 'PX', lease_ms)
redis.call('ZADD', running, clock_ms() + lease_ms, job_key)
local attempt = redis.call('HGET', job_key, 'attempt')
queue_webhook(job_key, 'started', redis.call('HGET', job_key, 'id') .. '.started.' .. attempt)
return {'claimed', redis.call('HGETALL', job_key)}
