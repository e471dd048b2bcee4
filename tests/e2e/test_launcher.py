"""`smartseg up` as a user runs it: it starts every process, records the PIDs, writes an env file that
the CLI uses, prints a first job that works as pasted, refuses a taken port or run dir, stops everything
when one of its processes dies, and stops all on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from smartseg.cli.launcher import child_environment
from smartseg.shared.settings import Settings

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 90
EXIT_TIMEOUT_S = 60
SERVICES = {"redis", "s3", "api", "router", "deliverer", "worker-us-east", "worker-eu-west"}
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def readme_walkthrough() -> str:
    """The README's curl walk-through: the shell block after its marker."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough: run as written by tests/e2e/test_launcher.py -->", 1)[1]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def user_environment(**extra: str) -> dict[str, str]:
    """A shell's environment: nothing of the test session's SMARTSEG_* settings, the venv on PATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("SMARTSEG_")}
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '')}", **extra}


@dataclass
class Up:
    process: subprocess.Popen[str]
    banner: str
    run_dir: Path

    @property
    def api_url(self) -> str:
        return self.banner.split("API ", 1)[1].split()[0]

    @property
    def env_file(self) -> Path:
        return self.run_dir / "smartseg.env"

    def pids(self) -> dict[str, int]:
        return dict(json.loads((self.run_dir / "pids.json").read_text()))


def start_up(run_dir: Path, *args: str) -> subprocess.Popen[str]:
    # Whatever the environment says, this launcher embeds Redis and S3 of its own.
    env = child_environment(Settings(redis_url=None, s3_endpoint=None))
    command = [sys.executable, "-m", "smartseg.cli", "up", "--run-dir", str(run_dir), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@contextmanager
def running_up(run_dir: Path, *args: str) -> Iterator[Up]:
    process = start_up(run_dir, *args)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        banner = ""
        # The banner ends with the curl line's body (`-d '...'`).
        while "    -d '" not in banner and time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line and process.poll() is not None:
                break
            banner += line
        assert "smartseg is up" in banner and "    -d '" in banner, banner
        yield Up(process, banner, run_dir)
    finally:
        if process.poll() is None:  # a failed assertion: still stop the stack the launcher's way
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def all_gone(pids: dict[str, int]) -> list[str]:
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [name for name, pid in pids.items() if alive(pid)]


def run(command: list[str] | str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    shell = isinstance(command, str)
    return subprocess.run(
        ["bash", "-c", command] if shell else command,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_up_serves_the_cli_through_its_env_file_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    with running_up(tmp_path / "run", "--port", "0", "--api-key", "sk-up-test") as up:
        pids = up.pids()
        assert set(pids) == SERVICES and all(alive(pid) for pid in pids.values())
        assert httpx.get(f"{up.api_url}/readyz", timeout=5).status_code == 200
        assert "/v1/segmentations" in httpx.get(f"{up.api_url}/openapi.json", timeout=5).json()["paths"]
        # The env file: only its owner can read it (it holds the key and the S3 secret).
        assert stat.S_IMODE(up.env_file.stat().st_mode) == 0o600
        assert f"SMARTSEG_API_URL='{up.api_url}'" in up.env_file.read_text()
        env = user_environment(SMARTSEG_ENV_FILE=str(up.env_file))

        # The first job exactly as printed: the CLI line, then the curl line, pasted into bash.
        cli_line, curl_line = up.banner.split("A first job", 1)[1].split("\n", 1)[1].split("\n", 1)
        cli = run(cli_line.strip(), env, workdir)
        assert cli.returncode == 0, cli.stderr
        assert "succeeded" in cli.stdout and "score" in cli.stdout and "overlay:" in cli.stdout
        saved = sorted(path.name for path in (workdir / "smartseg-out").iterdir())
        assert any(name.endswith(".mask-0.png") for name in saved) and any(".overlay." in n for n in saved)
        curl = run(curl_line.strip(), env, workdir)
        job = json.loads(curl.stdout)
        assert job["status"] == "succeeded" and job["result"] == "match", curl.stdout + curl.stderr

        # The README's curl walk-through, as written but for the port and the key.
        walkthrough = readme_walkthrough().replace("http://127.0.0.1:8000", up.api_url)
        answer = run(walkthrough.replace("KEY=sk-local-demo", "KEY=sk-up-test"), env, ROOT)
        assert answer.returncode == 0 and answer.stdout, answer.stderr
        shown = json.loads(answer.stdout)
        assert shown["status"] == "succeeded" and shown["result"] == "match", answer.stdout + answer.stderr
        assert [mask["label"] for mask in shown["masks"]] == ["purple circle"]

        # The rest of the CLI, and the operator commands, reach the same stack through the env file.
        listed = run(["smartseg", "jobs", "list", "--json"], env, workdir)
        assert job["id"] in {item["id"] for item in json.loads(listed.stdout)}, listed.stderr
        regions = json.loads(run(["smartseg", "regions", "--json"], env, workdir).stdout)
        assert {region["region"] for region in regions if region["healthy"]} == {"us-east", "eu-west"}
        health = run(["smartseg", "health", "--worker"], {**env, "SMARTSEG_REGION": "eu-west"}, workdir)
        assert health.returncode == 0, health.stderr
        for role in ("--router", "--deliverer"):  # the container probes of the other two loops
            probe = run(["smartseg", "health", role], env, workdir)
            assert probe.returncode == 0, probe.stderr

        # A second launcher refuses the same run dir, and another one the same port, before starting
        # anything of its own.
        again = start_up(up.run_dir, "--port", "0")
        assert again.wait(timeout=EXIT_TIMEOUT_S) == 1
        assert "another `smartseg up` is running" in (again.stdout.read() if again.stdout else "")
        port = up.api_url.rsplit(":", 1)[1]
        taken = start_up(tmp_path / "other", "--port", port)
        assert taken.wait(timeout=EXIT_TIMEOUT_S) == 1
        assert f"port {port} on 127.0.0.1 is already in use" in (taken.stdout.read() if taken.stdout else "")
        assert not (tmp_path / "other" / "pids.json").exists()
        assert httpx.get(f"{up.api_url}/readyz", timeout=5).status_code == 200  # the first one still serves

        up.process.send_signal(signal.SIGINT)
        assert up.process.wait(timeout=EXIT_TIMEOUT_S) == 0
        assert not all_gone(pids)
        assert not up.env_file.exists()  # the CLI must not reach for a stack that is gone
        gone = run(["smartseg", "regions"], user_environment(), workdir)
        assert gone.returncode == 1 and "no API URL" in gone.stderr


def test_up_stops_the_stack_and_fails_when_one_of_its_processes_dies(tmp_path: Path) -> None:
    with running_up(tmp_path / "run", "--port", "0") as up:
        pids = up.pids()
        os.kill(pids["worker-eu-west"], signal.SIGKILL)
        assert up.process.wait(timeout=EXIT_TIMEOUT_S) == 1
        said = up.process.stdout.read() if up.process.stdout else ""
        assert re.search(r"worker-eu-west exited \(code -9\); see .*worker-eu-west\.log", said), said
        assert not all_gone(pids)
        assert not up.env_file.exists()
