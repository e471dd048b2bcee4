"""A bare Celery worker with one no-op task: the baseline that bench/overhead.py compares smartseg against.

It uses smartseg's own Celery settings (same broker, serializer, acks, prefetch, pool) plus a Redis
result backend, so the difference to a full job is what smartseg itself adds.
"""

from __future__ import annotations

import logging
import sys

from celery import Celery
from kombu import Queue

from smartseg.shared.celery_app import make_celery
from smartseg.shared.settings import Settings

NOOP_TASK = "bench.noop"
NOOP_QUEUE = "bench.noop"


def make_noop_app(settings: Settings) -> Celery:
    app = make_celery(settings)
    app.conf.update(
        result_backend=settings.require_redis_url(),
        task_ignore_result=False,
        task_queues=[*app.conf.task_queues, Queue(NOOP_QUEUE)],
    )

    @app.task(name=NOOP_TASK)
    def noop(value: int) -> int:
        return value

    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # bench/overhead.py waits for Celery's "ready." line
    worker_settings = Settings()
    name = sys.argv[1] if len(sys.argv) > 1 else "noop"
    make_noop_app(worker_settings).worker_main(
        ["worker", "--queues", NOOP_QUEUE, "--pool", "solo", "--hostname", f"{name}@%h", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"]
    )  # fmt: skip
