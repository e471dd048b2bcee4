-- Queues a webhook delivery for a job's event, in the same step as the state change it reports, so an
-- event is queued exactly once however many workers or messages touched the job. Only events the job
-- subscribed to (its record's `webhook_events`, comma-separated) are queued.
-- `job_key` is a job's record, <prefix>:job:<id>, or a batch's, <prefix>:batch:<id> (keys.py); every key
-- derives from it: the delivery <prefix>:delivery:<id>, the due set <prefix>:deliveries:due (ms), and its
-- record's deliveries <job_key>:deliveries.
-- `delivery_id` is the webhook-id: stable for the event, across every retry.
local function queue_webhook(job_key, event, delivery_id)
  local subscribed = redis.call('HGET', job_key, 'webhook_events')
  if not subscribed or not string.find(',' .. subscribed .. ',', ',' .. event .. ',', 1, true) then
    return
  end
  local prefix = string.match(job_key, '^(.*):job:[^:]+$') or string.match(job_key, '^(.*):batch:[^:]+$')
  local delivery = prefix .. ':delivery:' .. delivery_id
  if redis.call('EXISTS', delivery) == 1 then return end
  local ttl_s = redis.call('TTL', job_key)
  local now_ms = clock_ms()
  redis.call('HSET', delivery, 'id', delivery_id, 'job_key', job_key, 'event', event,
    'status', 'pending', 'failures', 0, 'created_at', now_ms / 1000, 'next_attempt_at', now_ms / 1000)
  redis.call('ZADD', prefix .. ':deliveries:due', now_ms, delivery_id)
  redis.call('RPUSH', job_key .. ':deliveries', delivery_id)
  if ttl_s > 0 then
    redis.call('EXPIRE', delivery, ttl_s)
    redis.call('EXPIRE', job_key .. ':deliveries', ttl_s)
  end
end
