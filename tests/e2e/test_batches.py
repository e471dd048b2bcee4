"""Batches through the whole stack: inline items and a JSONL manifest served over HTTP become jobs in a
moving window (the router expands them), run on the workers, and come back as results in manifest order;
an interactive job submitted during a batch finishes before it; a cancel stops what has not run."""

from __future__ import annotations

import json
import time

import httpx

from smartseg.shared.storage import MaskStorage
from smartseg.testing.scenes import demo_scene
from tests.e2e.chaos import api_client, until
from tests.e2e.conftest import ImageServer, RunningStack


def status_of(api: httpx.Client, batch_id: str) -> dict[str, object]:
    batch: dict[str, object] = api.get(f"/v1/batches/{batch_id}").json()
    return batch


def test_inline_items_run_and_come_back_in_order(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("batch-scene.png", demo_scene().image)
    api = api_client(running_stack)
    items = [{"image_url": image_url, "prompt": "red circle", "key": f"inline-{n}"} for n in range(40)]
    items[7] = {"image_url": image_url, "prompts": ["blue square", "left circle"], "key": "inline-7"}
    created = api.post("/v1/batches", json={"items": items, "defaults": {"options": {"max_masks": 1}}})
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    until(lambda: status_of(api, batch_id)["status"] == "completed")
    batch = status_of(api, batch_id)
    assert batch["total"] == 40 and batch["progress"] == 1.0
    assert batch["counts"]["succeeded"] == 40 and batch["amount_usd"] == "14.8"  # type: ignore[index]  # 40 x 0.37
    lines = [json.loads(line) for line in api.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    assert [line["index"] for line in lines] == list(range(40))
    assert [line["key"] for line in lines] == [f"inline-{n}" for n in range(40)]
    assert all(line["status"] == "succeeded" and line["outputs"][0]["url"] for line in lines)
    listed = api.get("/v1/segmentations", params={"batch_id": batch_id, "limit": 100}).json()["data"]
    assert {job["id"] for job in listed} == {line["job_id"] for line in lines}
    assert all(job["input"]["priority"] == "batch" for job in listed)


def test_a_manifest_is_read_as_a_stream_and_an_interactive_job_overtakes_it(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("manifest-scene.png", demo_scene().image)
    lines = [json.dumps({"image_url": image_url, "prompt": "red circle"}) for _ in range(300)]
    lines.insert(100, '{"image_url": "not a url", "prompt": "red circle"}')
    image_server.images["manifest.jsonl"] = "\n".join(lines).encode()
    api = api_client(running_stack)
    created = api.post("/v1/batches", json={"manifest_url": f"{image_server.base_url}/manifest.jsonl"})
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    until(lambda: int(status_of(api, batch_id)["submitted"]) > 0)  # type: ignore[call-overload]
    interactive = api.post(
        "/v1/segmentations",
        json={"image_url": image_url, "prompt": "red circle"},
        headers={"Prefer": "wait=30"},
    ).json()
    assert interactive["status"] == "succeeded"
    assert status_of(api, batch_id)["status"] != "completed"  # the batch was still going
    until(lambda: status_of(api, batch_id)["status"] == "completed")
    batch = status_of(api, batch_id)
    assert batch["total"] == 301
    assert batch["counts"] == {  # type: ignore[comparison-overlap]
        "queued_or_running": 0, "succeeded": 300, "failed": 0, "canceled": 0, "invalid": 1, "reused": 0,
    }  # fmt: skip
    results = [json.loads(line) for line in api.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    assert len(results) == 301 and results[100]["status"] == "invalid"
    assert results[100]["error"]["code"] == "image_url_forbidden"


def test_a_canceled_batch_runs_no_more_items(running_stack: RunningStack, image_server: ImageServer) -> None:
    image_url = image_server.add_png("cancel-scene.png", demo_scene().image)
    lines = [json.dumps({"image_url": image_url, "prompt": "red circle"}) for _ in range(3000)]
    image_server.images["big-manifest.jsonl"] = "\n".join(lines).encode()
    api = api_client(running_stack)
    batch_id = api.post(
        "/v1/batches", json={"manifest_url": f"{image_server.base_url}/big-manifest.jsonl"}
    ).json()["id"]
    until(lambda: int(status_of(api, batch_id)["submitted"]) > 0)  # type: ignore[call-overload]
    canceled = api.post(f"/v1/batches/{batch_id}/cancel").json()
    assert canceled["status"] == "canceled"
    time.sleep(1.5)  # items being made as the cancel came are made, and canceled
    settled = status_of(api, batch_id)["submitted"]
    time.sleep(1.5)  # three router ticks: nothing more is read
    assert status_of(api, batch_id)["submitted"] == settled and int(settled) < 3000  # type: ignore[call-overload]
    until(lambda: status_of(api, batch_id)["counts"]["queued_or_running"] == 0)  # type: ignore[index]
    assert status_of(api, batch_id)["counts"]["canceled"] > 0  # type: ignore[index]


def test_a_router_killed_during_expansion_is_replaced_and_no_item_is_made_twice(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("restart-scene.png", demo_scene().image)
    lines = [json.dumps({"image_url": image_url, "prompt": "red circle"}) for _ in range(400)]
    image_server.images["restart-manifest.jsonl"] = "\n".join(lines).encode()
    api = api_client(running_stack)
    stack = running_stack.stack
    batch_id = api.post(
        "/v1/batches", json={"manifest_url": f"{image_server.base_url}/restart-manifest.jsonl"}
    ).json()["id"]
    until(lambda: int(status_of(api, batch_id)["submitted"]) >= 64)  # type: ignore[call-overload]
    assert stack.router is not None
    stack.router.kill()  # SIGKILL, mid-expansion: its open manifest stream dies with it
    stack.router.wait(timeout=10)
    stack.start_router()  # a new copy takes the lock once the old one's expires, and resumes
    until(lambda: status_of(api, batch_id)["status"] == "completed")
    batch = status_of(api, batch_id)
    assert batch["total"] == 400 and batch["counts"]["succeeded"] == 400  # type: ignore[index]
    results = [json.loads(line) for line in api.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    assert len({result["job_id"] for result in results}) == 400  # every item once, none twice
    listed = api.get("/v1/segmentations", params={"batch_id": batch_id, "limit": 100}).json()
    assert len(listed["data"]) == 100 and listed["next_cursor"]


def test_a_manifest_in_s3_under_an_allowed_prefix_is_read_and_others_are_refused(
    running_stack: RunningStack, image_server: ImageServer
) -> None:
    image_url = image_server.add_png("s3-scene.png", demo_scene().image)
    settings = running_stack.stack.settings
    storage = MaskStorage.from_settings(settings)
    lines = [
        json.dumps({"image_url": image_url, "prompt": "red circle", "key": f"s3-{n}"}) for n in range(30)
    ]
    storage.client.put_object(
        Bucket=settings.s3_bucket, Key="manifests/s3.jsonl", Body="\n".join(lines).encode()
    )
    api = api_client(running_stack)
    created = api.post("/v1/batches", json={"manifest_url": f"S3://{settings.s3_bucket}/manifests/s3.jsonl"})
    assert created.status_code == 202, created.text
    batch_id = created.json()["id"]
    until(lambda: status_of(api, batch_id)["status"] == "completed")
    assert status_of(api, batch_id)["counts"]["succeeded"] == 30  # type: ignore[index]
    for url in (f"s3://{settings.s3_bucket}/jobs/other-tenant.png", "s3://another-bucket/manifests/x.jsonl"):
        refused = api.post("/v1/batches", json={"manifest_url": url})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "manifest_url_forbidden", url
