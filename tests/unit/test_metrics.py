"""Prometheus metrics: each process's registry has its role's metrics under their published names; a job
is counted once where it ends (the job store's end steps), billed runs at a billing finish, a finished
run's stages once each, a webhook attempt by its outcome; a non-API process serves them on its port."""

from __future__ import annotations

import re

import fakeredis
import httpx
import pytest
from prometheus_client import generate_latest

from smartseg.cli.launcher import free_ports
from smartseg.shared.jobspec import JobSpec
from smartseg.shared.jobstore import JobStatus, JobStore, RequeueResult
from smartseg.shared.keys import Keys
from smartseg.shared.metrics import ROUTER_ACTIVE, STAGES, Role, registry, serve_metrics
from smartseg.shared.settings import Settings
from smartseg.shared.webhooks import WebhookStore
from tests.unit import test_runner, test_webhooks

PRICE = 120_000
MATCHED = [{"prompt": "red circle", "result": "match", "masks": 1}]
NO_MATCH = [{"prompt": "red circle", "result": "no_match", "masks": 0}]
# The names another engineer's dashboard and alert rules use: changing one breaks them.
PUBLISHED: dict[Role, dict[str, str]] = {
    "api": {
        "smartseg_jobs_submitted_total": "counter",
        "smartseg_jobs_finished_total": "counter",
        "smartseg_queue_depth": "gauge",
        "smartseg_region_healthy": "gauge",
        "smartseg_region_live_workers": "gauge",
        "smartseg_http_requests_total": "counter",
        "smartseg_http_request_duration_seconds": "histogram",
    },
    "worker": {
        "smartseg_jobs_finished_total": "counter",
        "smartseg_job_stage_seconds": "histogram",
        "smartseg_billed_runs_total": "counter",
        "smartseg_worker_messages_total": "counter",
    },
    "router": {
        "smartseg_router_active": "gauge",
        "smartseg_router_messages_sent_total": "counter",
        "smartseg_jobs_submitted_total": "counter",
        "smartseg_jobs_finished_total": "counter",
    },
    "deliverer": {"smartseg_webhook_deliveries_total": "counter"},
}


def sample(role: Role, name: str, **labels: str) -> float:
    return registry(role).get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("role", list(PUBLISHED))
def test_each_role_exports_its_metrics_under_their_published_names(role: Role) -> None:
    text = generate_latest(registry(role)).decode()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))
    assert {name: kind for name, kind in types.items() if name.startswith("smartseg_")} == PUBLISHED[role]
    assert "process_cpu_seconds_total" in types  # and the process's own


def test_a_process_serves_its_metrics_on_its_own_port_only_when_one_is_set() -> None:
    assert serve_metrics(Settings(), "router") is None
    assert serve_metrics(Settings(metrics_port=0), "router") is None
    port = free_ports(1)[0]
    server = serve_metrics(Settings(metrics_port=port), "router")
    assert server is not None
    try:
        ROUTER_ACTIVE.set(1)
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert answer.status_code == 200 and "smartseg_router_active 1.0" in answer.text
        assert "smartseg_webhook_deliveries_total" not in answer.text
    finally:
        ROUTER_ACTIVE.set(0)
        server.shutdown()
        server.server_close()


@pytest.fixture
def store() -> JobStore:
    return JobStore(
        fakeredis.FakeRedis(decode_responses=True), Keys("t"), job_ttl_s=3600, price_micro_usd=PRICE
    )


def create(store: JobStore, idempotency: str | None = None, region: str = "m-east") -> tuple[str, bool]:
    spec = JobSpec(image_url="https://images.example.com/x.png", prompts=("red circle",), pipeline="lite")
    job, created = store.create(
        owner="alice",
        spec=spec,
        region=region,
        filename_stem="x",
        idempotency_key_hash=idempotency,
        request_hash="h" if idempotency else None,
    )
    return job.id, created


def test_a_job_is_counted_once_when_created_and_once_where_it_ends(store: JobStore) -> None:
    lite = {"region": "m-east", "pipeline": "lite"}

    def ended(status: str) -> float:
        return sample("worker", "smartseg_jobs_finished_total", status=status, **lite)

    submitted = sample("api", "smartseg_jobs_submitted_total", priority="interactive", **lite)
    before = {status.value: ended(status.value) for status in JobStatus if status.is_terminal()}
    billed = sample("worker", "smartseg_billed_runs_total", **lite)
    first, created = create(store, idempotency="k1")
    assert created and create(store, idempotency="k1") == (first, False)  # a replay is no new job
    assert sample("api", "smartseg_jobs_submitted_total", priority="interactive", **lite) == submitted + 1

    def finish(prompt_results: list[dict[str, object]]) -> None:
        job_id, _ = create(store)
        job = store.get(job_id)
        assert job is not None
        store.claim(job.id, job.token, "w1", 10, region="m-east")
        running = store.get(job.id)
        assert running is not None
        store.succeed(running, job.token, outputs=[], prompt_results=prompt_results, metrics={})
        # The same finish again (its reply lost): the job ended once.
        assert store.succeed(running, job.token, outputs=[], prompt_results=prompt_results, metrics={})

    finish(MATCHED)  # billed
    finish(NO_MATCH)  # succeeded, not billed (bill_no_match is off)
    assert ended("succeeded") == before["succeeded"] + 2
    assert sample("worker", "smartseg_billed_runs_total", **lite) == billed + 1

    failing, _ = create(store)
    job = store.get(failing)
    assert job is not None
    store.claim(job.id, job.token, "w1", 10, region="m-east")
    store.fail(job, job.token, error={"code": "x"}, metrics={})
    assert ended("failed") == before["failed"] + 1

    queued, _ = create(store)
    store.cancel("alice", queued)
    store.cancel("alice", queued)  # canceled already: it ended once
    assert ended("canceled") == before["canceled"] + 1

    racing, _ = create(store)  # a cancel that races a success: canceled, unbilled
    job = store.get(racing)
    assert job is not None
    store.claim(job.id, job.token, "w1", 10, region="m-east")
    store.cancel("alice", racing)
    assert store.succeed(job, job.token, outputs=[], prompt_results=MATCHED, metrics={}) is JobStatus.CANCELED
    assert ended("canceled") == before["canceled"] + 2
    assert sample("worker", "smartseg_billed_runs_total", **lite) == billed + 1

    lost, _ = create(store)  # its worker died with a cancel pending: the router's requeue ends it
    job = store.get(lost)
    assert job is not None
    store.claim(job.id, job.token, "w1", 0.001, region="m-east")
    store.cancel("alice", lost)
    for _ in range(200):
        if store.requeue_if_lease_expired(lost) is RequeueResult.CANCELED:
            break
    assert ended("canceled") == before["canceled"] + 3


def test_a_finished_run_observes_each_stage_once(store: JobStore) -> None:
    def counts() -> dict[str, float]:
        return {
            stage: sample(
                "worker", "smartseg_job_stage_seconds_count", stage=stage, region="r", pipeline="fake"
            )
            for stage in STAGES
        }

    before = counts()
    job = test_runner.new_job(store, ["a"])
    runner = test_runner.make_runner(store, test_runner.MemoryStorage(), test_runner.FakePipeline())
    runner.region = "r"
    assert runner.run(job.id, job.token, "fake") == "succeeded"
    assert counts() == {stage: count + 1 for stage, count in before.items()}
    assert runner.run(job.id, job.token, "fake") == "not_queued"  # a duplicate message: no run, no stages
    assert counts() == {stage: count + 1 for stage, count in before.items()}
    failing = test_runner.new_job(store, ["a"], image_url="data:image/png;base64,bm90IGFuIGltYWdl")
    assert runner.run(failing.id, failing.token, "fake") == "failed"  # fetched, not decoded
    after = counts()
    assert (after["fetch"], after["decode"], after["total"]) == (
        before["fetch"] + 2,
        before["decode"] + 1,
        before["total"] + 2,
    )


def test_each_webhook_attempt_is_counted_by_its_outcome(store: JobStore) -> None:
    webhooks = WebhookStore(store._redis, Keys("t"))

    def outcomes() -> dict[str, float]:
        return {
            outcome: sample("deliverer", "smartseg_webhook_deliveries_total", outcome=outcome)
            for outcome in ("delivered", "retrying", "gone", "exhausted")
        }

    before = outcomes()
    test_webhooks.finished_job(store)
    receiver = test_webhooks.Receiver(500, 503, 204)
    sender = test_webhooks.deliverer(store, webhooks, receiver, schedule="0")
    test_webhooks.deliver_all(sender, webhooks, 3)  # retrying, then exhausted
    test_webhooks.finished_job(store)
    test_webhooks.deliver_all(sender, webhooks, 1)  # delivered
    gone = test_webhooks.deliverer(store, webhooks, test_webhooks.Receiver(410))
    test_webhooks.finished_job(store)
    test_webhooks.deliver_all(gone, webhooks, 1)
    test_webhooks.finished_job(store)
    test_webhooks.deliver_all(gone, webhooks, 1)  # gone before: not sent, still counted as gone
    after = outcomes()
    assert {outcome: after[outcome] - before[outcome] for outcome in after} == {
        "delivered": 1,
        "retrying": 1,
        "gone": 2,
        "exhausted": 1,
    }
