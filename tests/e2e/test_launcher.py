"""`smartseg up` as a user runs it: it starts every process, records the PIDs and stops all on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from smartseg.cli.launcher import child_environment
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 90


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_records_pids_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    # Whatever the environment says, this launcher embeds Redis and S3 of its own.
    env = child_environment(Settings(redis_url=None, s3_endpoint=None))
    process = subprocess.Popen(
        [sys.executable, "-m", "smartseg.cli", "up", "--run-dir", str(tmp_path), "--api-key", "sk-up-test"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        banner = ""
        while "smartseg is up" not in banner and time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line and process.poll() is not None:
                break
            banner += line
        assert "smartseg is up" in banner, banner
        api_url = banner.split("API ", 1)[1].split()[0]
        pids = json.loads((tmp_path / "pids.json").read_text())
        assert set(pids) == {"redis", "s3", "api", "router", "deliverer", "worker-us-east", "worker-eu-west"}
        assert all(alive(pid) for pid in pids.values())
        health = httpx.get(f"{api_url}/readyz", timeout=5)
        assert health.status_code == 200
        docs = httpx.get(f"{api_url}/openapi.json", timeout=5).json()
        assert "/v1/segmentations" in docs["paths"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [name for name, pid in pids.items() if alive(pid)]
    finally:
        if process.poll() is None:  # a failed assertion: still stop the stack the launcher's way
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
