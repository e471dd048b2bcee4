"""A 2,000-item batch against the same 2,000 jobs submitted one by one, in one run, on the same stack
(API, router, one `lite` worker, embedded Redis and S3): items per second from the first request to the
last job's end, and the API requests each way took.

The batch goes up as two inline batches of 1,000 (the API's limit), is polled once a second and its
results read as JSONL; the single jobs are POSTed by 8 client threads and their ends read from Redis
(not counted: a client would poll, so the singles' request count is a floor). Prints a table and saves
bench/results/backfill.json with `items_per_s_vs_single` (target >= 0.9) and the request counts.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loopback import stack_settings
from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobstore import JobStore
from smartseg.shared.settings import Settings
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import demo_scene

RESULTS = Path(__file__).resolve().parent / "results" / "backfill.json"
API_KEY = "sk-bench-backfill"
CHUNK = 1000
CLIENT_THREADS = 8
TARGET = 0.9


def scene_png() -> bytes:
    buffer = io.BytesIO()
    demo_scene().image.resize((160, 107)).save(buffer, format="PNG")
    return buffer.getvalue()


def item(url: str, n: int) -> dict[str, Any]:
    return {"image_url": url, "prompt": "red circle", "key": f"bench-{time.time_ns()}-{n}"}


def run_batch(api: httpx.Client, items: list[dict[str, Any]]) -> tuple[float, int, int]:
    """Seconds until every item ended, the requests that sent and fetched it, and the status polls."""
    requests = polls = 0
    started = time.perf_counter()
    ids = []
    for start in range(0, len(items), CHUNK):
        ids.append(
            api.post("/v1/batches", json={"items": items[start : start + CHUNK]})
            .raise_for_status()
            .json()["id"]
        )
        requests += 1
    pending = set(ids)
    while pending:
        time.sleep(1.0)
        for batch_id in list(pending):
            polls += 1
            if api.get(f"/v1/batches/{batch_id}").json()["status"] == "completed":
                pending.discard(batch_id)
    elapsed = time.perf_counter() - started
    for batch_id in ids:
        lines = api.get(f"/v1/batches/{batch_id}/results").text.splitlines()
        requests += 1
        assert all(json.loads(line)["status"] == "succeeded" for line in lines), (
            "a batch item did not succeed"
        )
    return elapsed, requests, polls


def run_singles(api_url: str, store: JobStore, items: list[dict[str, Any]]) -> tuple[float, int]:
    started = time.perf_counter()

    def submit(chunk: list[dict[str, Any]]) -> list[str]:
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as api:
            return [
                api.post("/v1/segmentations", json={k: v for k, v in job.items() if k != "key"})
                .raise_for_status()
                .json()["id"]
                for job in chunk
            ]

    share = len(items) // CLIENT_THREADS + 1
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        ids = [
            job_id
            for chunk in pool.map(submit, [items[i : i + share] for i in range(0, len(items), share)])
            for job_id in chunk
        ]
    while True:
        jobs = store.get_many(ids)
        if all(job is not None and job.status.is_terminal() for job in jobs):
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    assert all(job is not None and job.status.value == "succeeded" for job in jobs), (
        "a single job did not succeed"
    )
    return elapsed, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    settings = stack_settings(
        regions=["us-east"],
        default_region="us-east",
        api_key_hashes=[hash_api_key(API_KEY)],
        max_active_jobs=0,
    )
    with serve_pngs({"scene.png": scene_png()}) as images:
        url = f"{images}/scene.png"
        report = measure(settings, url, args.items)
    print(f"{'':10}{'seconds':>10}{'items/s':>10}{'API requests':>14}")
    for name in ("batch", "single"):
        row = report[name]
        print(f"{name:10}{row['seconds']:>10}{row['items_per_s']:>10}{row['api_requests']:>14}")
    ratio = report["items_per_s_vs_single"]
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"items/s, batch vs one by one: {ratio} (target >= {TARGET}: {verdict})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


def measure(settings: Settings, url: str, items: int) -> dict[str, Any]:
    stack = Stack(settings, Path(tempfile.mkdtemp(prefix="smartseg-bench-backfill-"))).start()
    try:
        store = JobStore.from_settings(stack.settings)
        with httpx.Client(
            base_url=stack.api_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as api:
            batch_s, batch_requests, batch_polls = run_batch(api, [item(url, n) for n in range(items)])
        single_s, single_requests = run_singles(stack.api_url, store, [item(url, n) for n in range(items)])
    finally:
        stack.stop()
    batch_rate, single_rate = items / batch_s, items / single_s
    ratio = round(batch_rate / single_rate, 3)
    return {
        "items": items,
        "workers": 1,
        "batch": {
            "seconds": round(batch_s, 2),
            "items_per_s": round(batch_rate, 1),
            "api_requests": batch_requests + batch_polls,
            "submit_and_result_requests": batch_requests,
            "status_polls": batch_polls,
        },
        "single": {
            "seconds": round(single_s, 2),
            "items_per_s": round(single_rate, 1),
            "api_requests": single_requests,
        },
        "items_per_s_vs_single": ratio,
        "target": {"items_per_s_vs_single_min": TARGET},
        "target_met": ratio >= TARGET,
    }


if __name__ == "__main__":
    main()
