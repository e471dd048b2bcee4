"""``python -m smartseg.worker``: one Celery worker serving ``SMARTSEG_REGION``, interactive before batch."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from smartseg.shared.errors import WorkerStartError
from smartseg.shared.jobstore import JobStore
from smartseg.shared.keys import Keys, region_queues
from smartseg.shared.logs import configure_logging
from smartseg.shared.metrics import serve_metrics
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.settings import Settings
from smartseg.worker.celery_worker import (
    build_runner,
    build_worker_app,
    load_pipelines,
    pool_arguments,
    worker_versions,
)
from smartseg.worker.heartbeat import Heartbeat
from smartseg.worker.shutdown import GracefulShutdown


def main() -> None:
    settings = Settings()
    configure_logging(settings, "worker")
    if settings.region not in settings.regions:
        raise SystemExit(
            f"SMARTSEG_REGION={settings.region!r} is not one of SMARTSEG_REGIONS={settings.regions}"
        )
    # Before the models load: a metrics port in use fails the start at once.
    if serve_metrics(settings, "worker") and settings.worker_pool == "prefork":
        logging.getLogger("worker").warning(
            "SMARTSEG_WORKER_POOL=prefork: jobs run in child processes, whose job metrics this port "
            "does not show; run one solo worker per process to scrape them"
        )
    try:
        loaded = load_pipelines(settings)  # now, so a broken one stops the worker at start, not mid-job
    except WorkerStartError as exc:
        logging.getLogger("worker").error("cannot start: %s", exc)
        raise SystemExit(1) from None
    client = redis_client(settings.require_redis_url(), settings.redis_timeout_s)
    store = JobStore.from_settings(settings, client)
    runner = build_runner(settings, store, loaded)
    runner.storage.ensure_bucket()
    app = build_worker_app(settings, runner)
    heartbeat = Heartbeat(
        client,
        Keys(settings.key_prefix),
        worker_id=runner.worker_id,
        region=settings.region,
        pipelines=list(runner.pipelines),
        interval_s=settings.heartbeat_interval_s,
        ttl_s=settings.heartbeat_ttl_s,
        device=loaded.device,
        versions=worker_versions(),
        status=runner.status,
    )

    # The heartbeat starts once the worker consumes, so a live heartbeat means jobs will be picked up.
    @worker_ready.connect(weak=False)
    def start_heartbeat(**_: Any) -> None:
        heartbeat.start()

    shutdown = GracefulShutdown(runner, store, heartbeat, settings.shutdown_grace_s)

    # SIGTERM/SIGINT: Celery stops consuming and waits for the running task; this bounds that wait.
    @worker_shutting_down.connect(weak=False)
    def begin_shutdown(**_: Any) -> None:
        shutdown.begin()

    @worker_shutdown.connect(weak=False)
    def stop_heartbeat(**_: Any) -> None:
        heartbeat.stop()

    # JSON logs: no banner, which Celery prints as a block of text rather than logging it.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    app.worker_main(
        [
            *quiet,
            "worker",
            "--queues",
            ",".join(region_queues(settings.region)),
            *pool_arguments(settings),
            "--hostname",
            f"{runner.worker_id}@%h",
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


if __name__ == "__main__":
    main()
