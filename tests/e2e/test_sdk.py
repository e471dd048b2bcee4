"""The Python SDK and the CLI against the whole stack as real processes: masks decoded from every output
format equal the scene's truth, paging, cancel, batches, usage, regions, and the async client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smartseg.cli import commands
from smartseg.shared.client import AsyncClient, Client
from smartseg.shared.errors import SmartsegAPIError
from smartseg.testing.scenes import Scene, generate_scene, scene_prompts
from tests.e2e.conftest import IDLE_REGION, ImageServer, RunningStack

pytestmark = pytest.mark.e2e
MIN_IOU = 0.9


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(seed=11)


@pytest.fixture(scope="module")
def client(running_stack: RunningStack) -> Client:
    return Client(running_stack.stack.api_url, running_stack.api_key)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("output_format", ["png", "rle", "polygon", "cutout"])
def test_segment_returns_masks_equal_to_the_truth_in_every_format(
    client: Client, scene: Scene, output_format: str, tmp_path: Path
) -> None:
    case = next(
        case for case in scene_prompts(scene) if case.expected is not None and case.category == "color"
    )
    result = client.segment(scene.image, case.prompt, output_format=output_format)  # a PIL image: a data URL
    assert result.status == "succeeded" and result.result == "match"
    union = np.logical_or.reduce(result.arrays())
    assert union.shape == case.expected.shape and iou(union, case.expected) >= MIN_IOU
    for mask in result.masks:
        assert mask.array.sum() == mask.area and mask.image.size == scene.image.size
        assert (mask.cutout is not None) == (output_format == "cutout")
    paths = result.save(tmp_path)
    assert paths[-1].name == f"{result.id}.overlay.png" and Image.open(paths[-1]).size == scene.image.size


def test_urls_paths_and_arrays_are_all_images(
    client: Client, scene: Scene, image_server: ImageServer, tmp_path: Path
) -> None:
    url = image_server.add_png("sdk-scene.png", scene.image)
    path = tmp_path / "scene.jpg"
    scene.image.save(path, quality=95)
    case = next(case for case in scene_prompts(scene) if case.expected is not None)
    for image in (url, path, np.asarray(scene.image), path.read_bytes()):
        result = client.segment(image, prompts=[case.prompt, "purple elephant"])
        assert [item.result for item in result.job.prompt_results] == ["match", "no_match"]
        assert iou(np.logical_or.reduce(result.arrays()), case.expected) >= MIN_IOU
        assert result.overlay().size == scene.image.size  # the source image comes back for the overlay


def test_list_cancel_regions_usage_and_errors(
    client: Client, running_stack: RunningStack, scene: Scene
) -> None:
    parked = client.submit(scene.image, "red shape", region=IDLE_REGION, region_policy="require")
    assert parked.status == "queued"
    assert client.cancel(parked.id).status == "canceled"
    assert client.wait(parked.id).status == "canceled"
    listed = list(client.list(limit=150, page_size=7))
    assert parked.id in {job.id for job in listed} and len(listed) == len({job.id for job in listed})
    assert [job.id for job in client.list(status="canceled", limit=1)] == [parked.id]
    healthy = {region.region for region in client.regions() if region.healthy}
    assert healthy == {"us-east", "eu-west"}
    usage = client.usage()
    assert usage.runs >= 1 and usage.currency == "USD"
    with pytest.raises(SmartsegAPIError) as missing:
        client.get("seg_doesnotexist")
    assert missing.value.status == 404 and missing.value.code == "not_found"


def test_batch_and_results(client: Client, image_server: ImageServer, scene: Scene) -> None:
    url = image_server.add_png("sdk-batch.png", scene.image)
    batch = client.batch(
        [{"image_url": url, "prompt": "largest shape"}, {"image_url": url, "prompt": "red shape"}]
    )
    for _ in range(300):
        batch = client.get_batch(batch.id)
        if batch.status == "completed":
            break
        asyncio.run(asyncio.sleep(0.1))
    assert batch.status == "completed" and batch.counts.succeeded == 2
    results = list(client.batch_results(batch.id))
    assert [line["index"] for line in results] == [0, 1] and all(
        line["status"] == "succeeded" for line in results
    )


def test_async_client_runs_jobs_concurrently(running_stack: RunningStack, scene: Scene) -> None:
    cases = [case for case in scene_prompts(scene) if case.expected is not None][:3]

    async def run() -> list[float]:
        async with AsyncClient(running_stack.stack.api_url, running_stack.api_key) as client:
            results = await asyncio.gather(*(client.segment(scene.image, case.prompt) for case in cases))
        return [
            iou(np.logical_or.reduce(r.arrays()), c.expected) for r, c in zip(results, cases, strict=True)
        ]

    assert min(asyncio.run(run())) >= MIN_IOU


def test_cli_segment_jobs_and_usage(
    running_stack: RunningStack, scene: Scene, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "scene.png"
    scene.image.save(path)
    connection = ["--api-url", running_stack.stack.api_url, "--api-key", running_stack.api_key]
    out = tmp_path / "out"
    argv = ["segment", str(path), "largest shape", "red shape", "--format", "rle", "-o", str(out), "--json"]
    assert commands.main([*argv, *connection]) == 0
    job = json.loads(capsys.readouterr().out)
    assert job["status"] == "succeeded" and job["input"]["prompts"] == ["largest shape", "red shape"]
    assert {path.name for path in out.iterdir()} >= {output["filename"] for output in job["outputs"]}
    assert (out / f"{job['id']}.overlay.png").is_file()
    # The human summary: one line per mask, and a line for a prompt that found nothing.
    assert commands.main(["segment", str(path), "purple elephant", "-o", str(out), *connection]) == 0
    said = capsys.readouterr().out
    assert "'purple elephant': no match" in said and "lite sees flat colour shapes only" in said
    assert commands.main(["jobs", "get", job["id"], "--json", *connection]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == job["id"]
    assert commands.main(["jobs", "cancel", job["id"], *connection]) == 1
    assert "job_already_finished" in capsys.readouterr().err
    assert commands.main(["usage", "--by-day", *connection]) == 0
    assert "billed run" in capsys.readouterr().out
    assert commands.main(["segment", str(tmp_path / "missing.png"), "x", *connection]) == 1
    assert "no such file" in capsys.readouterr().err
