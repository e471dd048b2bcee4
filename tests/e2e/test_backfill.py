"""``smartseg backfill``: a 2,000-item manifest with ``lite`` through the batches API, interrupted with
Ctrl-C once its batches are in, then run again: it resumes, writes every item once, makes no job twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from smartseg.testing.scenes import demo_scene
from tests.e2e.conftest import ImageServer, RunningStack

ITEMS = 1200  # more than one of the API's 1,000-item batches: the resume finds each again


def test_a_backfill_resumes_after_ctrl_c_without_redoing_items(
    running_stack: RunningStack, image_server: ImageServer, tmp_path: Path
) -> None:
    image_url = image_server.add_png("backfill-scene.png", demo_scene().image)
    manifest = tmp_path / "photos.jsonl"
    lines = [json.dumps({"image_url": image_url, "prompt": "red circle"}) for _ in range(ITEMS)]
    lines.insert(5, "this line is not an item")
    manifest.write_text("\n".join(lines) + "\n")
    output = tmp_path / "photos.results.jsonl"
    command = [
        sys.executable, "-m", "smartseg.cli", "backfill", str(manifest),
        "--api-url", running_stack.stack.api_url, "--api-key", running_stack.api_key,
    ]  # fmt: skip

    first = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (output.exists() and output.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # its batches are in; few of their items have ended
    first.send_signal(signal.SIGINT)
    _, first_status = first.communicate(timeout=30)
    assert first.returncode == 130, first_status
    assert "run it again" in first_status
    written_first = output.read_text().count("\n")
    assert written_first < ITEMS + 1

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 1, second.stderr  # one line was not an item
    assert f"{ITEMS + 1}/{ITEMS + 1} done, 1 failed" in second.stderr
    results = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(result["index"] for result in results) == list(range(ITEMS + 1))  # each once
    assert results[0]["index"] == 5 and results[0]["status"] == "invalid"
    succeeded = [result for result in results if result["status"] == "succeeded"]
    assert len(succeeded) == ITEMS and all(result["outputs"] for result in succeeded)
    assert len({result["job_id"] for result in succeeded}) == ITEMS  # no item made twice
