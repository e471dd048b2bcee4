"""Redis memory per job, for retention sizing: a stack of its own (a private embedded Redis, the API, the
router, a `lite` worker) takes N jobs through the API while no worker serves the region (queued: record,
indexes, Celery message), then a worker runs them all (finished: record with outputs, metrics, history);
and N jobs whose image is a data URL (kept in the record while the job is kept).

Memory is Redis's own `used_memory`, before and after, divided by the jobs; keys by MEMORY USAGE for
one finished job. Prints a table and saves bench/results/job_memory.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.keys import Keys
from smartseg.shared.settings import Settings
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import demo_scene

RESULTS = Path(__file__).resolve().parent / "results" / "job_memory.json"
API_KEY = "sk-bench-memory"
REGION = "us-east"
DONE_TIMEOUT_S = 600


def scene_png() -> bytes:
    buffer = io.BytesIO()
    demo_scene().image.save(buffer, format="PNG")
    return buffer.getvalue()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def submit(api: httpx.Client, image_url: str, count: int, tag: str) -> list[str]:
    ids = []
    for n in range(count):
        body = {"image_url": image_url, "prompts": ["red circle", "largest shape"]}
        headers = {"Idempotency-Key": f"{tag}-{n}"}
        ids.append(api.post("/v1/segmentations", json=body, headers=headers).raise_for_status().json()["id"])
    return ids


def wait_done(client: redis.Redis, keys: Keys, ids: list[str]) -> None:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = [client.hget(keys.job(job_id), "status") for job_id in ids]
        if all(status == "succeeded" for status in statuses):
            return
        time.sleep(0.5)
    raise SystemExit("jobs did not finish in time")


def measure(settings: Settings, url: str, data_url: str, jobs: int) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="smartseg-bench-memory-"))
    stack = Stack(settings, run_dir, worker_regions=[]).start()
    try:
        client = redis.Redis.from_url(stack.settings.require_redis_url(), decode_responses=True)
        keys = Keys(stack.settings.key_prefix)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60) as api:
            time.sleep(1.0)  # the router's first ticks write what they keep
            empty = used_memory(client)
            ids = submit(api, url, jobs, "url")
            queued = used_memory(client)
            stack.start_worker(REGION)
            stack.wait_for_workers()
            wait_done(client, keys, ids)
            time.sleep(1.0)  # the router crosses off what it owed
            finished = used_memory(client)
            data_ids = submit(api, data_url, jobs, "data")
            wait_done(client, keys, data_ids)
            time.sleep(1.0)
            with_data = used_memory(client)
        one = ids[0]
        breakdown = {
            "record": client.memory_usage(keys.job(one)) or 0,
            "data_url_record": client.memory_usage(keys.job(data_ids[0])) or 0,
        }
        client.close()
    finally:
        stack.stop()
    return {
        "jobs": jobs,
        "bytes_per_queued_job": round((queued - empty) / jobs),
        "bytes_per_finished_job": round((finished - empty) / jobs),
        "bytes_per_finished_data_url_job": round((with_data - finished) / jobs),
        "data_url_chars": len(data_url),
        "memory_usage_of_one_record": breakdown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    settings = Settings().updated(
        redis_url=None,  # a private Redis: nothing else's keys in the figures
        regions=[REGION],
        default_region=REGION,
        api_key_hashes=[hash_api_key(API_KEY)],
        api_port=0,
        log_level="WARNING",
        rate_limit_per_s=1e6,
        rate_limit_burst=1_000_000,
        max_active_jobs=0,
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
    )
    png = scene_png()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    with serve_pngs({"scene.png": png}) as images:
        report = measure(settings, f"{images}/scene.png", data_url, args.jobs)
    print(f"{'job':34}{'bytes':>10}")
    print(f"{'queued (record + message)':34}{report['bytes_per_queued_job']:>10,}")
    print(f"{'finished (2 prompts, 2 masks)':34}{report['bytes_per_finished_job']:>10,}")
    print(f"{'finished, image as a data URL':34}{report['bytes_per_finished_data_url_job']:>10,}")
    print(f"  (the data URL: {report['data_url_chars']:,} characters)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
