"""The whole stack as real processes: submit, poll, wait, cancel, idempotency, isolation, errors."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from smartseg.cli import commands
from smartseg.shared.celery_app import PINNED_HEADER
from smartseg.shared.client import SmartsegAPIError
from smartseg.shared.keys import Keys
from smartseg.shared.mask_encoding import decode_rle
from smartseg.testing.scenes import Scene, generate_scene
from tests.e2e.chaos import fast_and_slow_image_urls, wait_for_status
from tests.e2e.conftest import IDLE_REGION, ImageServer, RunningStack

pytestmark = pytest.mark.e2e
WAIT_S = 30


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(seed=7)


@pytest.fixture(scope="module")
def scene_url(image_server: ImageServer, scene: Scene) -> str:
    return image_server.add_png("scene7.png", scene.image)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_submit_poll_and_download_mask(running_stack: RunningStack, scene: Scene, scene_url: str) -> None:
    target = scene.shapes[0]
    prompt = f"{target.color} {target.kind}"
    with running_stack.client() as client:
        created = client.create({"image_url": scene_url, "prompt": prompt})
        assert created["status"] in ("queued", "running", "succeeded")
        assert created["urls"]["get"].endswith(f"/v1/segmentations/{created['id']}")
        job = client.wait(created["id"], timeout_s=WAIT_S)
    assert job["status"] == "succeeded", job
    assert job["result"] == "match"
    price = running_stack.stack.settings.price_usd  # not the default: a hard-coded price would show
    assert job["billing"] == {
        "billed": True,
        "amount_usd": str(price),
        "currency": "USD",
        "reason": "succeeded",
    }
    assert set(job["metrics"]) >= {"queue_s", "fetch_s", "inference_s", "upload_s", "total_s"}
    output = job["outputs"][0]
    assert output["filename"] == "scene7.mask-0.png"
    assert output["model"] == "lite"
    assert (output["width"], output["height"]) == scene.image.size
    mask_png = httpx.get(output["url"], timeout=10).raise_for_status().content
    mask_image = Image.open(io.BytesIO(mask_png))
    assert mask_image.size == scene.image.size
    mask = np.asarray(mask_image) > 0
    assert set(np.unique(np.asarray(mask_image))) <= {0, 255}
    assert iou(mask, target.mask) >= 0.9
    assert output["area"] == int(mask.sum())


def test_rle_output_through_the_api_decodes_to_the_target(
    running_stack: RunningStack, scene: Scene, scene_url: str
) -> None:
    target = scene.shapes[0]
    body = {
        "image_url": scene_url,
        "prompt": f"{target.color} {target.kind}",
        "options": {"output_format": "rle"},
    }
    with running_stack.client() as client:
        job = client.wait(client.create(body)["id"], timeout_s=WAIT_S)
    assert job["status"] == "succeeded", job
    assert job["input"]["options"]["output_format"] == "rle"
    output = job["outputs"][0]
    assert (output["filename"], output["content_type"]) == ("scene7.mask-0.rle.json", "application/json")
    mask = decode_rle(httpx.get(output["url"], timeout=10).raise_for_status().json())
    assert iou(mask, target.mask) >= 0.9 and output["area"] == int(mask.sum())


def test_regions_show_health_workers_and_queues(running_stack: RunningStack) -> None:
    url = f"{running_stack.stack.api_url}/v1/regions"
    assert httpx.get(url, timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {running_stack.api_key}"}
    regions = {
        r["region"]: r for r in httpx.get(url, headers=auth, timeout=10).raise_for_status().json()["data"]
    }
    assert set(regions) == set(running_stack.stack.settings.regions)
    for name in running_stack.stack.workers:
        assert regions[name]["healthy"] and regions[name]["live_workers"] == 1
        assert regions[name]["seconds_since_last_beat"] < running_stack.stack.settings.heartbeat_ttl_s
        assert regions[name]["pipelines"] == ["lite"]
    assert (regions[IDLE_REGION]["healthy"], regions[IDLE_REGION]["live_workers"]) == (False, 0)


def test_prefer_wait_answers_when_the_job_ends(running_stack: RunningStack, scene_url: str) -> None:
    url = f"{running_stack.stack.api_url}/v1/segmentations"
    headers = {"Authorization": f"Bearer {running_stack.api_key}", "Prefer": f"wait={WAIT_S}"}
    body = {"image_url": scene_url, "prompt": "largest shape"}
    # The POST itself holds until the job ends (a job takes well under a second; the wait allows 30).
    created = httpx.post(url, json=body, headers=headers, timeout=WAIT_S + 10)
    assert created.status_code == 202
    assert created.headers["Preference-Applied"] == f"wait={WAIT_S}"
    assert created.json()["status"] == "succeeded"


def test_no_match_is_a_success_without_masks(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client() as client:
        job = client.wait(
            client.create({"image_url": scene_url, "prompts": ["shoe", "largest shape"]})["id"], WAIT_S
        )
    assert job["status"] == "succeeded"
    assert job["prompt_results"][0] == {"prompt": "shoe", "result": "no_match", "masks": 0}
    assert job["prompt_results"][1]["result"] == "match"
    assert all(output["prompt"] == "largest shape" for output in job["outputs"])
    assert job["billing"]["billed"]  # one prompt found something: the run is billed


def test_a_run_that_found_nothing_is_not_billed(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client() as client:
        job = client.wait(
            client.create({"image_url": scene_url, "prompts": ["shoe", "mug handle"]})["id"], WAIT_S
        )
    assert job["status"] == "succeeded" and job["result"] == "no_match" and job["outputs"] == []
    assert job["billing"] == {"billed": False, "amount_usd": "0", "currency": "USD", "reason": "no_match"}


def test_data_url_image_in_other_region(running_stack: RunningStack, scene: Scene) -> None:
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with running_stack.client() as client:
        job = client.wait(
            client.create({"image_url": data_url, "prompt": "largest shape", "region": "eu-west"})["id"],
            WAIT_S,
        )
    assert job["status"] == "succeeded"
    assert job["region"] == "eu-west"
    assert job["input"]["image_url"].endswith("chars)")
    assert job["outputs"][0]["filename"] == "image.mask-0.png"


def test_cancel_queued_job(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client() as client:
        body = {
            "image_url": scene_url,
            "prompt": "red shape",
            "region": IDLE_REGION,
            "region_policy": "require",
        }
        job = client.create(body)
        assert (job["status"], job["region"]) == ("queued", IDLE_REGION)
        settings = running_stack.stack.settings
        queued = redis.Redis.from_url(str(settings.redis_url)).lrange(
            Keys(settings.key_prefix).queue(IDLE_REGION), 0, -1
        )
        [message] = [
            json.loads(raw)
            for raw in queued
            if job["id"].encode() in base64.b64decode(json.loads(raw)["body"])
        ]
        assert message["headers"][PINNED_HEADER] is True  # the router leaves it in its region
        canceled = client.cancel(job["id"])
        assert canceled["status"] == "canceled"
        assert canceled["billing"]["billed"] is False
        assert client.cancel(job["id"])["status"] == "canceled"  # idempotent


def test_a_cancel_interrupts_a_stalled_download(running_stack: RunningStack) -> None:
    read_timeout_s = running_stack.stack.settings.fetch_read_timeout_s
    with (
        fast_and_slow_image_urls(seed=8, slow_fetch_s=read_timeout_s + 10) as (_, stalled),
        running_stack.client() as client,
    ):
        job = client.create({"image_url": stalled, "prompt": "largest shape"})
        wait_for_status(client, job["id"], "running")
        client.cancel(job["id"])
        # Well before the read timeout: the download checks for a cancel every second while it waits.
        done = client.wait(job["id"], timeout_s=read_timeout_s / 2)
    assert (done["status"], done["error"], done["billing"]["billed"]) == ("canceled", None, False)


def test_a_job_for_a_region_without_workers_runs_in_a_healthy_one(
    running_stack: RunningStack, scene_url: str
) -> None:
    with running_stack.client() as client:
        created = client.create({"image_url": scene_url, "prompt": "red shape", "region": IDLE_REGION})
        job = client.wait(created["id"], timeout_s=WAIT_S)
    assert job["status"] == "succeeded"
    assert job["region"] in running_stack.stack.workers and job["input"]["region"] == IDLE_REGION


def test_cancel_finished_job_conflicts(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client() as client:
        job = client.wait(client.create({"image_url": scene_url, "prompt": "largest shape"})["id"], WAIT_S)
        with pytest.raises(SmartsegAPIError) as error:
            client.cancel(job["id"])
    assert (error.value.status, error.value.code) == (409, "job_already_finished")


def test_idempotency_replay_and_conflict(running_stack: RunningStack, scene_url: str) -> None:
    body = {"image_url": scene_url, "prompt": "smallest shape"}
    with running_stack.client() as client:
        first = client.create(body, idempotency_key="order-42")
        again = client.create(body, idempotency_key="order-42")
        assert again["id"] == first["id"]
        with pytest.raises(SmartsegAPIError) as error:
            client.create({**body, "prompt": "largest shape"}, idempotency_key="order-42")
    assert (error.value.status, error.value.code) == (409, "idempotency_conflict")


def test_another_keys_job_is_not_found(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client() as client:
        job = client.create({"image_url": scene_url, "prompt": "red shape"})
    with running_stack.client(running_stack.other_api_key) as other:
        for call in (lambda: other.get(job["id"]), lambda: other.cancel(job["id"])):
            with pytest.raises(SmartsegAPIError) as error:
                call()
            assert (error.value.status, error.value.code) == (404, "not_found")
        assert all(item["id"] != job["id"] for item in other.list()["data"])


def test_fetch_failure_fails_the_job_unbilled(running_stack: RunningStack, image_server: ImageServer) -> None:
    with running_stack.client() as client:
        job = client.wait(
            client.create({"image_url": f"{image_server.base_url}/missing.png", "prompt": "x"})["id"], WAIT_S
        )
    assert job["status"] == "failed"
    assert job["error"]["code"] == "image_fetch_failed"
    assert job["billing"]["billed"] is False


def test_list_pages_with_cursor(running_stack: RunningStack, scene_url: str) -> None:
    with running_stack.client(running_stack.other_api_key) as client:
        ids = [
            client.create(
                {
                    "image_url": scene_url,
                    "prompt": "red shape",
                    "region": IDLE_REGION,
                    "region_policy": "require",
                }
            )["id"]
            for _ in range(5)
        ]
        first = client.list(limit=2)
        second = client.list(limit=2, cursor=first["next_cursor"])
        queued = client.list(status="queued", limit=100)
    assert [job["id"] for job in first["data"] + second["data"]] == ids[::-1][:4]
    assert set(ids) <= {job["id"] for job in queued["data"]}


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, {"image_url": "https://example.com/a.png", "prompt": "x"}, 401, "unauthorized"),
        (None, {"image_url": "https://example.com/a.png"}, 422, "invalid_request"),
        (
            None,
            {"image_url": "https://example.com/a.png", "prompt": "x", "prompts": ["y"]},
            422,
            "invalid_request",
        ),
        (None, {"image_url": "file:///etc/passwd", "prompt": "x"}, 422, "image_url_forbidden"),
        (
            None,
            {"image_url": "http://169.254.169.254/latest/meta-data", "prompt": "x"},
            422,
            "image_url_forbidden",
        ),
        (
            None,
            {"image_url": "https://example.com/a.png", "prompt": "x", "region": "mars"},
            422,
            "unknown_region",
        ),
        (
            None,
            {"image_url": "https://example.com/a.png", "prompt": "x", "options": {"pipeline": "nope"}},
            422,
            "unknown_pipeline",
        ),
        (  # a known pipeline that no live worker loaded: refused at once rather than queued forever
            None,
            {"image_url": "https://example.com/a.png", "prompt": "x", "options": {"pipeline": "sam3"}},
            422,
            "unknown_pipeline",
        ),
        (None, {"image_url": "https://example.com/a.png", "prompt": "x" * 301}, 422, "invalid_request"),
    ],
)
def test_bad_requests_get_stable_error_codes(
    running_stack: RunningStack,
    headers: dict[str, str] | None,
    body: dict[str, object],
    status: int,
    code: str,
) -> None:
    auth = {"Authorization": f"Bearer {running_stack.api_key}"} if headers is None else headers
    response = httpx.post(
        f"{running_stack.stack.api_url}/v1/segmentations", json=body, headers=auth, timeout=10
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_oversized_body_and_garbage_json(running_stack: RunningStack) -> None:
    url = f"{running_stack.stack.api_url}/v1/segmentations"
    auth = {"Authorization": f"Bearer {running_stack.api_key}", "Content-Type": "application/json"}
    huge = httpx.post(
        url, content=b"x" * (running_stack.stack.settings.max_request_bytes + 1), headers=auth, timeout=30
    )
    assert (huge.status_code, huge.json()["error"]["code"]) == (413, "payload_too_large")
    garbage = httpx.post(url, content=b"{not json", headers=auth, timeout=10)
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (422, "invalid_request")
    assert httpx.get(f"{running_stack.stack.api_url}/healthz", timeout=5).json() == {"status": "ok"}


NESTED = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize(
    ("name", "content", "status", "code"),
    [
        ("invalid UTF-8", b'{"image_url": "\xff\xfe", "prompt": "x"}', 422, "invalid_request"),
        ("nested 10,000 deep", NESTED, 422, "invalid_request"),
        ("a 5,000-digit number", b'{"image_url": "x", "prompt": "x", "options": {"max_masks": '
         + b"9" * 5000 + b"}}", 422, "invalid_request"),
        ("a lone surrogate in prompts", b'{"image_url": "https://a.example/x.png", "prompts": ["\\udfff"]}',
         422, "invalid_request"),
        ("a lone surrogate in the image URL",
         b'{"image_url": "https://a.example/\\udfff.png", "prompt": "x"}', 422, "invalid_request"),
        ("a number as a string", b'{"image_url": "https://a.example/x.png", "prompt": "x", '
         b'"options": {"box_threshold": "0.3"}}', 422, "invalid_request"),
        ("a boolean as an integer", b'{"image_url": "https://a.example/x.png", "prompt": "x", '
         b'"options": {"max_masks": true}}', 422, "invalid_request"),
        ("an empty pipeline", b'{"image_url": "https://a.example/x.png", "prompt": "x", '
         b'"options": {"pipeline": ""}}', 422, "invalid_request"),
        ("an empty region", b'{"image_url": "https://a.example/x.png", "prompt": "x", "region": ""}',
         422, "invalid_request"),
    ],
)  # fmt: skip
def test_hostile_bodies_get_documented_errors_and_create_nothing(
    running_stack: RunningStack, name: str, content: bytes, status: int, code: str
) -> None:
    other_key = running_stack.other_api_key  # a key of its own, so its job list shows what was created
    headers = {"Authorization": f"Bearer {other_key}", "Content-Type": "application/json"}
    with httpx.Client(base_url=running_stack.stack.api_url, headers=headers, timeout=30) as http:
        before = http.get("/v1/segmentations").json()["data"]
        response = http.post("/v1/segmentations", content=content)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), name
        assert http.get("/v1/segmentations").json()["data"] == before  # nothing was created
        assert http.get("/healthz").status_code == 200  # the same kept-alive connection still works


@pytest.mark.parametrize("prompt", ["!!!", "?", "\U0001f45f", "\u200b", " . "])
def test_a_prompt_without_a_letter_or_digit_is_refused(running_stack: RunningStack, prompt: str) -> None:
    auth = {"Authorization": f"Bearer {running_stack.api_key}"}
    for body in ({"image_url": "https://a.example/x.png", "prompt": prompt},
                 {"image_url": "https://a.example/x.png", "prompts": ["red", prompt]}):  # fmt: skip
        response = httpx.post(f"{running_stack.stack.api_url}/v1/segmentations", json=body, headers=auth)
        assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")


def test_a_chunked_body_over_the_limit_is_413(running_stack: RunningStack) -> None:
    limit = running_stack.stack.settings.max_request_bytes

    def chunks() -> Iterator[bytes]:  # no Content-Length: the API only learns the size as it reads
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    headers = {"Authorization": f"Bearer {running_stack.api_key}", "Content-Type": "application/json"}
    response = httpx.post(
        f"{running_stack.stack.api_url}/v1/segmentations", content=chunks(), headers=headers, timeout=60
    )
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()["error"]["code"]) == (413, "payload_too_large")


def test_prefer_wait_with_thousands_of_digits_is_the_longest_wait(
    running_stack: RunningStack, scene_url: str
) -> None:
    headers = {"Authorization": f"Bearer {running_stack.api_key}", "Prefer": "wait=" + "9" * 5000}
    url = f"{running_stack.stack.api_url}/v1/segmentations"
    created = httpx.post(
        url, json={"image_url": scene_url, "prompt": "largest shape"}, headers=headers, timeout=90
    )
    assert created.status_code == 202
    assert created.headers["Preference-Applied"] == f"wait={running_stack.stack.settings.max_wait_s}"
    assert created.json()["status"] == "succeeded"
    got = httpx.get(f"{url}/{created.json()['id']}", headers=headers, timeout=30)
    assert got.status_code == 200 and got.json()["status"] == "succeeded"


def test_a_data_url_in_upper_case_is_shown_short(running_stack: RunningStack, scene: Scene) -> None:
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    url = "DATA:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with running_stack.client() as client:
        job = client.wait(client.create({"image_url": url, "prompt": "largest shape"})["id"], WAIT_S)
    assert job["status"] == "succeeded"
    shown = job["input"]["image_url"]
    assert shown.startswith("DATA:image/png;base64,") and shown.endswith(f"({len(url)} chars)")
    assert len(shown) < 100


def test_a_cursor_of_non_ascii_digits_is_refused(running_stack: RunningStack) -> None:
    auth = {"Authorization": f"Bearer {running_stack.api_key}"}
    response = httpx.get(f"{running_stack.stack.api_url}/v1/segmentations?cursor=\uff11", headers=auth)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_request")


def test_managed_keys_work_until_revoked_and_rotation_keeps_the_jobs(
    running_stack: RunningStack,
    scene_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = running_stack.stack.settings
    monkeypatch.setenv("SMARTSEG_REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("SMARTSEG_KEY_PREFIX", settings.key_prefix)

    def keys(*args: str) -> str:
        assert commands.main(["keys", *args]) == 0
        return capsys.readouterr().out.strip()

    secret = keys("create", "--name", "e2e")
    [listed] = [line for line in keys("list").splitlines() if line.endswith(" e2e")]
    key_id = listed.split()[0]
    url = f"{running_stack.stack.api_url}/v1/segmentations"
    body = {"image_url": scene_url, "prompt": "largest shape"}
    created = httpx.post(url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert created.status_code == 202
    api_log = (running_stack.stack.run_dir / "api.log").read_text()
    assert f"job {created.json()['id']} created by key {key_id}" in api_log and secret not in api_log

    rotated = keys("rotate", key_id)
    assert httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code == 401
    mine = httpx.get(url, headers={"Authorization": f"Bearer {rotated}"}, timeout=10).json()["data"]
    assert [job["id"] for job in mine] == [created.json()["id"]]  # the same owner, the same jobs

    [new_id] = [line.split()[0] for line in keys("list").splitlines() if line.endswith(" e2e")]
    keys("revoke", new_id)
    assert httpx.get(url, headers={"Authorization": f"Bearer {rotated}"}, timeout=10).status_code == 401
