"""Schemathesis against the live stack, through its CLI: every operation of /openapi.json, every check
(`--checks all`: no 5xx, statuses, headers and bodies as documented, schema-invalid data refused,
schema-valid data accepted), every phase (examples, coverage, fuzzing, stateful), bounded in time.

Generated bodies are sent as they are, but for ``image_url``: a valid request needs an image that can be
fetched, and which addresses may be fetched is configuration (private ones are refused at submit), not
something a schema can say, so schema-valid requests point at the stack's own image server
(``fuzz_hooks.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from smartseg.shared.api_keys import ApiKeyStore
from smartseg.shared.keys import Keys
from smartseg.shared.redis_connection import redis_client
from smartseg.testing.scenes import demo_scene
from tests.e2e.conftest import ImageServer, RunningStack

TIME_BUDGET_S = 60
EXAMPLES_PER_OPERATION = 50
ROOT = Path(__file__).resolve().parents[2]


def test_the_api_keeps_its_contract(
    running_stack: RunningStack, image_server: ImageServer, tmp_path: Path
) -> None:
    # A managed key of its own: the jobs it makes by the thousand stay out of the other tests' way.
    settings = running_stack.stack.settings
    client = redis_client(settings.require_redis_url())
    key, _ = ApiKeyStore(client, Keys(settings.key_prefix)).create("fuzz")
    client.close()
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [
        str(schemathesis), "run", f"{running_stack.stack.api_url}/openapi.json",
        "--checks", "all",
        "--max-time", str(TIME_BUDGET_S),
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--request-timeout", "30",
        "--header", f"Authorization: Bearer {key}",
        "--seed", os.environ.get("SMARTSEG_FUZZ_SEED", "10"),
        "--no-color",
        "--generation-database", "none",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
        "SMARTSEG_FUZZ_IMAGE_URL": image_server.add_png("fuzz.png", demo_scene().image),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=TIME_BUDGET_S * 4, cwd=tmp_path
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-20_000:] + done.stderr[-5000:]
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated and int(generated.group(1)) > 0
