"""Every Prometheus metric smartseg exports, which process exports which, and how a process other than the
API serves its own (the API serves ``GET /metrics`` on its HTTP port).

The names are an interface: dashboards and alert rules use them (README, "Metrics and logs"). Every label
takes few values: regions, pipelines, priorities and statuses; HTTP routes as path templates, never a
raw path or a job id (each distinct label value is a time series Prometheus keeps).

Each process serves its role's metrics from a registry of its own, so a scrape shows only what that
process counts (an API never shows a router's gauge at 0). A job is counted where it ends (the job store's
end steps, in the worker, the API or the router); Prometheus sums over processes.

Why a port per process and not prometheus-client's multiprocess mode: a worker is one process (Celery's
``solo`` pool, the default), and so are the router and the deliverer, each in its own container in
production; a port per process is what Prometheus scrapes anywhere, with nothing shared. Multiprocess
mode is for one server forking many: it keeps values in files in a directory that must be set before the
client is imported, needs a mode chosen per gauge and a clean-up of each dead process's files, and
exports no per-process collectors (CPU, memory, GC).
"""

from __future__ import annotations

from typing import Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.registry import Collector

from smartseg.shared.settings import Settings

Role = Literal["api", "worker", "router", "deliverer"]

# A stage takes from milliseconds (decode) to many minutes (a batch job's wait in its queue).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
# A request takes milliseconds, or up to a minute with `Prefer: wait`.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# smartseg_job_stage_seconds' stages.
STAGES = ("queue_wait", "fetch", "decode", "inference", "upload", "total")

# registry=None everywhere: nothing is registered at import; `registry(role)` puts them where they belong.
JOBS_SUBMITTED = Counter(
    "smartseg_jobs_submitted_total",
    "Jobs created, batch items included; an Idempotency-Key replay creates none.",
    ["region", "pipeline", "priority"],
    registry=None,
)
JOBS_FINISHED = Counter(
    "smartseg_jobs_finished_total",
    "Jobs that ended (succeeded, failed, canceled), counted by the process that ended them.",
    ["status", "region", "pipeline"],
    registry=None,
)
JOB_STAGE_SECONDS = Histogram(
    "smartseg_job_stage_seconds",
    "Seconds a finished run spent in each stage: queue_wait (created to claimed), fetch, decode, "
    "inference, upload, total (created to ended).",
    ["stage", "region", "pipeline"],
    buckets=STAGE_BUCKETS,
    registry=None,
)
BILLED_RUNS = Counter(
    "smartseg_billed_runs_total",
    "Runs billed at their finish (the usage figures count the same runs).",
    ["region", "pipeline"],
    registry=None,
)
QUEUE_DEPTH = Gauge(
    "smartseg_queue_depth",
    "Messages waiting in a region's queue (interactive or batch), read from Redis at scrape time.",
    ["region", "priority"],
    registry=None,
)
REGION_HEALTHY = Gauge(
    "smartseg_region_healthy",
    "1 while the region has a worker with a live heartbeat, else 0.",
    ["region"],
    registry=None,
)
REGION_LIVE_WORKERS = Gauge(
    "smartseg_region_live_workers", "Workers of the region with a live heartbeat.", ["region"], registry=None
)
WEBHOOK_DELIVERIES = Counter(
    "smartseg_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered; retrying (failed, tried again later); gone (the "
    "endpoint answered 410, nothing more is sent to it); exhausted (failed, no retry left).",
    ["outcome"],
    registry=None,
)
HTTP_REQUESTS = Counter(
    "smartseg_http_requests_total",
    "API requests answered, by method, route (the path template) and status.",
    ["method", "route", "status"],
    registry=None,
)
HTTP_REQUEST_SECONDS = Histogram(
    "smartseg_http_request_duration_seconds",
    "Seconds from a request's arrival to the end of its response, by method and route.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=None,
)
ROUTER_MESSAGES_SENT = Counter(
    "smartseg_router_messages_sent_total",
    "Job messages the router put in a region's queue, by why: moved (a dead region's message, carried with "
    "its job), resent (a new message for a queued job whose message was lost), owed (from the outbox: a "
    "new job's first message the API did not send, a lost run's next one).",
    ["reason", "region"],
    registry=None,
)
WORKER_MESSAGES = Counter(
    "smartseg_worker_messages_total",
    "Job messages a worker took from its queue, by outcome: the run's end (succeeded, failed, canceled, "
    "lost), or why it was dropped unrun (stale: an earlier run's token; not_queued: the job runs or ended; "
    "missing: the job expired; handed_back: its pipeline is not served here).",
    ["outcome"],
    registry=None,
)
ROUTER_ACTIVE = Gauge(
    "smartseg_router_active",
    "1 while this router copy holds the lock and routes, 0 on standby.",
    registry=None,
)

ROLE_METRICS: dict[Role, tuple[Collector, ...]] = {
    # The API ends a queued job it cancels; the router one whose run it requeues with a cancel pending,
    # and creates batch items; a worker ends the runs it finishes.
    "api": (
        JOBS_SUBMITTED,
        JOBS_FINISHED,
        QUEUE_DEPTH,
        REGION_HEALTHY,
        REGION_LIVE_WORKERS,
        HTTP_REQUESTS,
        HTTP_REQUEST_SECONDS,
    ),
    "worker": (JOBS_FINISHED, JOB_STAGE_SECONDS, BILLED_RUNS, WORKER_MESSAGES),
    "router": (ROUTER_ACTIVE, ROUTER_MESSAGES_SENT, JOBS_SUBMITTED, JOBS_FINISHED),
    "deliverer": (WEBHOOK_DELIVERIES,),
}


def registry(role: Role) -> CollectorRegistry:
    """A new registry of ``role``'s metrics and the process's own (CPU, memory, open files, GC)."""
    # No `<name>_created` series beside each counter and histogram: twice the series, and Prometheus reads
    # nothing from them in its text format.
    disable_created_metrics()
    made = CollectorRegistry()
    for metric in ROLE_METRICS[role]:
        made.register(metric)
    ProcessCollector(registry=made)
    PlatformCollector(registry=made)
    GCCollector(registry=made)
    return made


def serve_metrics(settings: Settings, role: Role) -> WSGIServer | None:
    """Serve ``role``'s metrics at ``http://metrics_host:metrics_port/metrics`` from a daemon thread, as
    the settings ask; None when they set no port. A port in use fails the process's start."""
    if not settings.metrics_port:
        return None
    server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry=registry(role))
    return server
