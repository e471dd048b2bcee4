"""``python -m smartseg.api.deliverer``: sends the queued webhook deliveries, signed the Standard Webhooks
way, and records every attempt. Its own process, never a GPU worker: a slow receiver delays no job.

Each tick takes at most ``SMARTSEG_WEBHOOK_MAX_IN_FLIGHT`` due deliveries (the backlog stays in Redis, so
memory does not grow with it), holds them while they are sent, and sends them side by side. The body is
the job as ``GET`` shows it, made at send time (fresh presigned URLs), in ``{type, timestamp, data}``.
A 2xx ends a delivery; a 410 Gone ends it and every later one to that endpoint; anything else (another
status, a timeout, a refused address) is retried on ``SMARTSEG_WEBHOOK_RETRY_SCHEDULE_S``, jittered, and
the delivery is ``failed`` when the schedule runs out. Several deliverers may run: the hold keeps them
apart, and a delivery held by one that died comes back when the hold ends (at least once).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from smartseg.api.job_view import batch_view, job_view
from smartseg.shared.batches import BatchStore
from smartseg.shared.errors import NotFound, SmartsegError
from smartseg.shared.fetch import GuardedPoster, fetch_limits
from smartseg.shared.jobstore import JobStore
from smartseg.shared.liveness import beat
from smartseg.shared.logs import configure_logging, url_host
from smartseg.shared.metrics import WEBHOOK_DELIVERIES, serve_metrics
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.settings import Settings
from smartseg.shared.storage import MaskStorage
from smartseg.shared.webhooks import DELIVERED, FAILED, GONE, PENDING, Delivery, WebhookStore

log = logging.getLogger("smartseg.api.deliverer")  # not __main__ under `python -m`

TICK_S = 0.2
JITTER = 0.2  # each retry delay is moved by up to a fifth either way, so receivers are not hit in step
GONE_STATUS = 410
# smartseg_webhook_deliveries_total's outcome for each status an attempt leaves a delivery in.
OUTCOMES = {DELIVERED: "delivered", PENDING: "retrying", GONE: "gone", FAILED: "exhausted"}


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        webhooks: WebhookStore,
        storage: MaskStorage,
        poster: GuardedPoster,
        batches: BatchStore,
    ) -> None:
        self.settings = settings
        self.store = store
        self.batches = batches
        self.webhooks = webhooks
        self.storage = storage
        self.poster = poster
        self.schedule = [float(delay) for delay in settings.webhook_retry_schedule_s]
        self.base_url = (
            settings.public_base_url or f"http://{settings.api_host}:{settings.api_port}"
        ).rstrip("/")
        # Held long enough for the slowest send of a tick, with room: then a dead deliverer's come back.
        self.hold_s = 2 * settings.webhook_timeout_s + 5

    def tick(self, pool: ThreadPoolExecutor) -> int:
        """Send what is due, at most max_in_flight at once; returns how many were taken."""
        taken = self.webhooks.take_due(self.settings.webhook_max_in_flight, self.hold_s)
        for done in pool.map(self.deliver, taken):
            del done
        return len(taken)

    def deliver(self, delivery_id: str) -> str:
        """One attempt at one delivery; returns the status it leaves the delivery in."""
        delivery = self.webhooks.get(delivery_id)
        if delivery is None or delivery.status != PENDING:
            self.webhooks.drop(delivery_id)  # expired with its job, or already ended
            return "dropped"
        subject = self._subject(delivery)
        if subject is None:  # its job or batch expired (only subscribed ones queue deliveries)
            self.webhooks.drop(delivery_id)
            return "dropped"
        owner, url, data = subject
        started = time.time()
        attempt: dict[str, Any] = {"at": started, "status_code": None, "latency_ms": None, "error": None}
        if self.webhooks.is_gone(owner, url):
            attempt["error"] = "the endpoint answered 410 Gone before: nothing more is sent to it"
            self.webhooks.record(delivery, attempt, GONE)
            WEBHOOK_DELIVERIES.labels(OUTCOMES[GONE]).inc()
            return GONE
        body = self._body(delivery, data)
        try:
            status = self.poster.post(
                url, body, self._headers(delivery, owner, body), self.settings.webhook_timeout_s
            )
            attempt["status_code"] = status
        except SmartsegError as exc:
            status = None
            attempt["error"] = _attempt_error(exc)
        attempt["latency_ms"] = round((time.time() - started) * 1000, 1)
        if status is not None and 200 <= status < 300:
            outcome = DELIVERED
        elif status == GONE_STATUS:
            self.webhooks.mark_gone(owner, url)
            outcome = GONE
        else:
            outcome = PENDING if delivery.failures < len(self.schedule) else FAILED
        retry_at = None
        if outcome == PENDING:
            delay = self.schedule[delivery.failures] * random.uniform(1 - JITTER, 1 + JITTER)
            retry_at = time.time() + delay
        self.webhooks.record(delivery, attempt, outcome, retry_at)
        WEBHOOK_DELIVERIES.labels(OUTCOMES[outcome]).inc()
        # The endpoint's host only: a webhook URL's path or query string may carry the receiver's token.
        subject_field = "batch_id" if delivery.subject == "batch" else "job_id"
        log.info(
            "delivery %s to %s: %s (%s)",
            delivery.id,
            url_host(url),
            outcome,
            status or attempt["error"],
            extra={subject_field: delivery.job_id},
        )
        return outcome

    def _subject(self, delivery: Delivery) -> tuple[str, str, dict[str, Any]] | None:
        """Whose it is, where it goes, and what it says: the job as GET shows it (fresh presigned URLs),
        or the batch."""
        if delivery.subject == "batch":
            try:
                batch = self.batches.get(delivery.job_id)
            except NotFound:
                return None
            if not batch.webhook_url:
                return None
            return batch.owner, batch.webhook_url, batch_view(batch).model_dump(mode="json")
        job = self.store.get(delivery.job_id)
        if job is None or job.spec.webhook is None:
            return None
        shown = job_view(job, self.storage, self.settings.presign_ttl_s, self.base_url)
        return job.owner, job.spec.webhook.url, shown.model_dump(mode="json")

    def _body(self, delivery: Delivery, data: dict[str, Any]) -> bytes:
        envelope = {
            "type": f"{delivery.subject if delivery.subject == 'batch' else 'segmentation'}.{delivery.event}",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        }
        return json.dumps(envelope, separators=(",", ":")).encode()

    def _headers(self, delivery: Delivery, owner: str, body: bytes) -> dict[str, str]:
        now = datetime.now(UTC)
        # During a secret's rotation both sign: a receiver that knows either one accepts the delivery.
        signatures = " ".join(
            Webhook(secret).sign(delivery.id, now, body.decode()) for secret in self.webhooks.secrets(owner)
        )
        return {
            "content-type": "application/json",
            "user-agent": "smartseg-webhooks/1",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures,
        }


def _attempt_error(exc: SmartsegError) -> str:
    """What an attempt's log says went wrong: the guard's reason, not its image-download wording."""
    reason = (exc.details or {}).get("reason")
    if exc.code == "image_url_forbidden":
        return f"refused: {exc.message}"
    return {"timeout": "timed out", "dns": "could not resolve the host"}.get(str(reason), "connection failed")


def run(settings: Settings, stop: threading.Event) -> None:
    client = redis_client(settings.require_redis_url(), settings.redis_timeout_s)
    store = JobStore.from_settings(settings, client)
    deliverer = Deliverer(
        settings,
        store,
        WebhookStore(client, store.keys),
        MaskStorage.from_settings(settings),
        GuardedPoster(fetch_limits(settings)),
        BatchStore(client, store.keys, settings.job_ttl_s),
    )
    with ThreadPoolExecutor(settings.webhook_max_in_flight, thread_name_prefix="deliver") as pool:
        while not stop.is_set():
            try:
                beat(client, store.keys, "deliverer")
                taken = deliverer.tick(pool)
            except Exception:
                log.exception("delivery tick failed; trying again")
                taken = 0
            if not taken:
                stop.wait(TICK_S)


def main() -> None:
    settings = Settings()
    configure_logging(settings, "deliverer")
    serve_metrics(settings, "deliverer")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("deliverer starting")
    run(settings, stop)


if __name__ == "__main__":
    main()
