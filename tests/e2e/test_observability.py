"""Metrics and logs of the real processes: the API's /metrics and each worker's, router's and deliverer's
own port move with the jobs they see; every line every process logs is a JSON object with the fields a
log pipeline indexes, job lines name their job, and no line carries a secret."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from smartseg.shared.metrics import STAGES
from smartseg.testing.scenes import demo_scene
from smartseg.testing.webhook_receiver import serve_webhooks
from tests.e2e.chaos import api_client, until
from tests.e2e.conftest import IDLE_REGION, SERVED_REGIONS, ImageServer, RunningStack

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
JOB_ID = re.compile(r"seg_[0-9a-f]{24}")
LINE_FIELDS = {"time", "level", "logger", "message", "role"}


def scrape(url: str) -> Samples:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_url(running_stack: RunningStack, process: str) -> str:
    stack = running_stack.stack
    return f"http://{stack.settings.metrics_host}:{stack.metrics_ports[process]}/metrics"


def test_the_api_and_every_process_serve_metrics_that_move_with_the_jobs(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    stack = running_stack.stack
    assert set(stack.metrics_ports) == {"router", "deliverer", *(f"worker-{r}" for r in SERVED_REGIONS)}
    api_metrics = f"{stack.api_url}/metrics"
    api = api_client(running_stack)
    image_url = image_server.add_png("metrics-scene.png", demo_scene().image)
    api_before = scrape(api_metrics)
    workers_before = {
        region: scrape(metrics_url(running_stack, f"worker-{region}")) for region in SERVED_REGIONS
    }

    submit = {"image_url": image_url, "prompt": "red circle"}
    idempotency = {"Idempotency-Key": f"metrics-{secrets.token_hex(4)}", "Prefer": "wait=30"}
    answered = api.post("/v1/segmentations", json=submit, headers=idempotency)
    job = answered.json()
    assert job["status"] == "succeeded", job
    assert api.post("/v1/segmentations", json=submit, headers=idempotency).json()["id"] == job["id"]  # replay
    assert api.get(f"/v1/segmentations/{job['id']}").status_code == 200
    region, lite = job["region"], {"pipeline": "lite"}

    api_after = scrape(api_metrics)
    submitted = ("smartseg_jobs_submitted_total", {"region": region, **lite, "priority": "interactive"})
    assert (
        value(api_after, submitted[0], **submitted[1]) == value(api_before, submitted[0], **submitted[1]) + 1
    )
    get_route = {"method": "GET", "route": "/v1/segmentations/{job_id}"}
    assert value(api_after, "smartseg_http_requests_total", **get_route, status="200") >= 1 + value(
        api_before, "smartseg_http_requests_total", **get_route, status="200"
    )
    post = {"method": "POST", "route": "/v1/segmentations", "status": str(answered.status_code)}
    assert value(api_after, "smartseg_http_requests_total", **post) >= 2 + value(
        api_before, "smartseg_http_requests_total", **post
    )
    assert value(api_after, "smartseg_http_request_duration_seconds_count", **get_route) >= 1
    routes = {dict(labels).get("route", "") for name, labels in api_after if name.startswith("smartseg_http")}
    assert not any(JOB_ID.search(route) for route in routes), routes  # templates, never raw paths

    # The worker counts the finish and observes its stages just after the API has answered.
    worker_metrics = metrics_url(running_stack, f"worker-{region}")
    before = workers_before[region]
    finished = ("smartseg_jobs_finished_total", {"status": "succeeded", "region": region, **lite})

    outcome = {"outcome": "succeeded"}  # the message that carried the job, counted after its run's end

    def worker_counted() -> bool:
        now = scrape(worker_metrics)
        messages = "smartseg_worker_messages_total"
        return (
            value(now, *finished[:1], **finished[1]) == value(before, *finished[:1], **finished[1]) + 1
            and value(now, messages, **outcome) == value(before, messages, **outcome) + 1
        )

    until(worker_counted, timeout_s=10)
    after = scrape(worker_metrics)
    assert value(after, "smartseg_billed_runs_total", region=region, **lite) == 1 + value(
        before, "smartseg_billed_runs_total", region=region, **lite
    )
    for stage in STAGES:
        labels = {"stage": stage, "region": region, **lite}
        count = "smartseg_job_stage_seconds_count"
        assert value(after, count, **labels) == value(before, count, **labels) + 1, stage
    assert value(after, "smartseg_job_stage_seconds_sum", stage="total", region=region, **lite) > 0
    assert value(after, "process_resident_memory_bytes") > 0
    assert not any(name.startswith("smartseg_http") for name, _ in after)  # only the worker's own

    # A job pinned to a region with no worker waits in its queue; canceled by the API, counted there.
    queued = {"region": IDLE_REGION, "priority": "interactive"}
    parked = api.post(
        "/v1/segmentations", json={**submit, "region": IDLE_REGION, "region_policy": "require"}
    ).json()
    assert parked["status"] == "queued"
    api_parked = scrape(api_metrics)
    assert (
        value(api_parked, "smartseg_queue_depth", **queued)
        >= value(api_before, "smartseg_queue_depth", **queued) + 1
    )
    assert value(api_parked, "smartseg_region_healthy", region=IDLE_REGION) == 0
    assert value(api_parked, "smartseg_region_live_workers", region=IDLE_REGION) == 0
    for served in SERVED_REGIONS:
        assert value(api_parked, "smartseg_region_healthy", region=served) == 1
        assert value(api_parked, "smartseg_region_live_workers", region=served) >= 1
    canceled = {"status": "canceled", "region": IDLE_REGION, **lite}
    assert api.post(f"/v1/segmentations/{parked['id']}/cancel").json()["status"] == "canceled"
    assert api.post(f"/v1/segmentations/{parked['id']}/cancel").status_code == 200  # again: no new end
    assert value(scrape(api_metrics), "smartseg_jobs_finished_total", **canceled) == 1 + value(
        api_parked, "smartseg_jobs_finished_total", **canceled
    )

    router = scrape(metrics_url(running_stack, "router"))
    assert value(router, "smartseg_router_active") == 1
    assert not any(name.startswith("smartseg_queue_depth") for name, _ in router)


def test_every_process_logs_json_lines_with_job_fields_and_no_secret(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    stack = running_stack.stack
    api = api_client(running_stack)
    webhook_secret = api.get("/v1/webhooks/secret").json()["secret"]
    assert webhook_secret.startswith("whsec_")
    image_token, missing_token, hook_token = (f"tok-{secrets.token_hex(8)}" for _ in range(3))
    image_url = image_server.add_png(f"logs-scene.png?sig={image_token}", demo_scene().image)
    deliverer_before = scrape(metrics_url(running_stack, "deliverer"))

    with serve_webhooks() as receiver:
        hook = f"{receiver.url}?token={hook_token}"
        created = api.post(
            "/v1/segmentations", json={"image_url": image_url, "prompt": "red circle", "webhook_url": hook}
        ).json()
        job_id = created["id"]
        until(lambda: api.get(f"/v1/segmentations/{job_id}").json()["status"] == "succeeded", timeout_s=30)
        outputs = api.get(f"/v1/segmentations/{job_id}").json()["outputs"]
        assert "X-Amz-Signature=" in outputs[0]["url"]  # presigned: the URL no log may show
        until(lambda: len(receiver.received) == 1, timeout_s=30)
    failing_url = f"{image_server.base_url}/missing.png?token={missing_token}"
    failed = api.post("/v1/segmentations", json={"image_url": failing_url, "prompt": "red circle"}).json()
    until(lambda: api.get(f"/v1/segmentations/{failed['id']}").json()["status"] == "failed", timeout_s=30)
    user_password = f"pw-{secrets.token_hex(6)}"
    with_user = image_url.replace("http://", f"http://someone:{user_password}@")
    refused = api.post("/v1/segmentations", json={"image_url": with_user, "prompt": "x"})
    assert refused.json()["error"]["code"] == "image_url_forbidden"
    until(
        lambda: (
            value(
                scrape(metrics_url(running_stack, "deliverer")),
                "smartseg_webhook_deliveries_total",
                outcome="delivered",
            )
            == 1 + value(deliverer_before, "smartseg_webhook_deliveries_total", outcome="delivered")
        ),
        timeout_s=10,
    )

    forbidden = {
        "the API key": running_stack.api_key,
        "the other API key": running_stack.other_api_key,
        "the S3 secret": stack.settings.s3_secret_key.get_secret_value(),
        "a presigned URL": "X-Amz-Signature",
        "a webhook secret": "whsec_",
        "the Redis password": running_stack.redis_password,
        "an image URL's query string": image_token,
        "a failing image URL's query string": missing_token,
        "a webhook URL's query string": hook_token,
        "an image URL's password": user_password,
    }
    roles = {"api": "api", "router": "router", "deliverer": "deliverer"}
    roles |= {f"worker-{region}": "worker" for region in SERVED_REGIONS}

    def lines(process: str) -> list[dict[str, Any]]:
        path: Path = stack.log_file(process)
        read = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for what, secret in forbidden.items():
                assert secret not in line, f"{path}:{number} shows {what}: {line}"
            try:
                record = json.loads(line)
            except ValueError:
                raise AssertionError(f"{path}:{number} is not JSON: {line}") from None
            assert isinstance(record, dict) and set(record) >= LINE_FIELDS, f"{path}:{number}: {line}"
            assert record["role"] == roles[process], f"{path}:{number}: {line}"
            if JOB_ID.search(record["message"]):
                assert JOB_ID.fullmatch(str(record.get("job_id"))), f"{path}:{number} names no job_id: {line}"
            read.append(record)
        return read

    worker = f"worker-{created['region']}"
    # The last line a worker writes for a job comes just after its finish: wait for it.
    until(
        lambda: any(r["message"].startswith(f"job {job_id} succeeded") for r in lines(worker)), timeout_s=10
    )
    logged = {process: lines(process) for process in roles}
    mine = [record for record in logged[worker] if record.get("job_id") == job_id]
    stages = {record.get("stage"): record for record in mine}
    assert {"queue_wait", "fetch", "decode", "inference", "upload", "total"} <= set(stages), mine
    for record in stages.values():
        assert isinstance(record["duration_s"], float | int) and record["duration_s"] >= 0
        assert record["region"] == created["region"] and record["worker"].startswith(created["region"])
    failures = [r for records in logged.values() for r in records if r.get("job_id") == failed["id"]]
    assert any("image_fetch_failed" in r["message"] for r in failures), failures
    access = [r for r in logged["api"] if r["logger"] == "smartseg.api.access" and r.get("job_id") == job_id]
    assert access and {r["route"] for r in access} == {"/v1/segmentations/{job_id}"}
    assert all(r["key_id"] and r["method"] == "GET" and r["status"] == 200 for r in access)
    assert any(r.get("job_id") == job_id and "delivered" in r["message"] for r in logged["deliverer"])
    # Celery's own lines come out in the same format.
    assert any(r["logger"].startswith("celery") for r in logged[worker])
