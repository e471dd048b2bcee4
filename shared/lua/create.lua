-- Creates a queued job, indexed as queued in its region and owed its first message (the caller sends it
-- and crosses it off; if the caller dies first, the router sends it once due). With an Idempotency-Key
-- seen before, creates nothing and says which job the key belongs to. An owner with as many queued or
-- running jobs as the cap gets none (0: no cap).
-- KEYS: [1] job record, [2] owner's job index, [3] sequence counter, [4] queued index of the region,
--       [5] outbox, [6] owner's active jobs, [7] idempotency key (absent: no key)
-- ARGV: [1] job id, [2] job TTL s (the Idempotency-Key's too: they expire together), [3] request hash,
--       [4] send grace ms, [5] region, [6] most active jobs, [7...] field, value pairs of the record
-- Returns: {'created', record as HGETALL} | {'existing', job id} | {'conflict', job id}
--          | {'too_many', active jobs}
--- @include "clock.lua"
local job_key, owner_jobs, sequence, queued, outbox, active, idempotency =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local job_id, job_ttl_s, request_hash, send_grace_ms, region, max_active =
  ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local FIRST_FIELD = 7

if idempotency then
  local seen = redis.call('GET', idempotency)
  if seen then
    local separator = string.find(seen, '|', 1, true)
    local seen_id = string.sub(seen, 1, separator - 1)
    if string.sub(seen, separator + 1) == request_hash then return {'existing', seen_id} end
    return {'conflict', seen_id}
  end
end
local now_s, now_ms = clock_s(), clock_ms()
-- Active jobs are scored by creation: one whose record expired unfinished stops counting with it.
redis.call('ZREMRANGEBYSCORE', active, '-inf', now_s - tonumber(job_ttl_s))
local running_or_queued = redis.call('ZCARD', active)
if max_active > 0 and running_or_queued >= max_active then return {'too_many', running_or_queued} end
redis.call('ZADD', active, now_s, job_key)
redis.call('EXPIRE', active, job_ttl_s)
redis.call('HSET', job_key, unpack(ARGV, FIRST_FIELD))
redis.call('HSET', job_key, 'created_at', now_s,
  'history', cjson.encode({{event = 'queued', region = region, attempt = 1, at = now_s}}))
redis.call('EXPIRE', job_key, job_ttl_s)
redis.call('ZADD', owner_jobs, redis.call('INCR', sequence), job_id)
redis.call('EXPIRE', owner_jobs, job_ttl_s)
redis.call('ZADD', queued, math.floor(now_s), job_key)
redis.call('ZADD', outbox, now_ms + send_grace_ms, job_key)
if idempotency then redis.call('SET', idempotency, job_id .. '|' .. request_hash, 'EX', job_ttl_s) end
return {'created', redis.call('HGETALL', job_key)}
