"""What smartseg adds on top of Celery: full jobs through the API vs a bare Celery no-op, in one run.

(a) bare Celery: a no-op task round trip (send, run, result back) on the same Redis, 2 solo workers;
(b) smartseg: full jobs through the HTTP API (tiny data: URL image, `lite`), 2 workers (one per region),
    each job one `POST` with `Prefer: wait` that returns when it has succeeded.
Both: N sequential round trips (p50/p99 latency) and N submitted at once (throughput), split into
alternating rounds (bare, full, bare, full...) so that drift in this noisy machine's speed hits both.
Prints a table and saves bench/results/overhead.json with the ratios against the bare baseline.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.noop_worker import NOOP_QUEUE, NOOP_TASK, make_noop_app
from smartseg.cli.launcher import Stack, child_environment, stop_processes, wait_until
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "overhead.json"
REGIONS = ["us-east", "eu-west"]
SUBMIT_THREADS = 16
WARMUP = 20
API_KEY = "sk-bench-overhead"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(latencies: list[float], throughput_jobs: int, throughput_s: float) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.mean(latencies) * 1000, 3),
        "throughput_per_s": round(throughput_jobs / throughput_s, 2),
    }


def tiny_image_url() -> str:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), (245, 245, 245))
    image.paste((220, 30, 30), (16, 16, 48, 48))
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@contextmanager
def noop_workers(settings: Settings, run_dir: Path) -> Iterator[None]:
    """Two bare Celery workers (solo pool, like smartseg's) on the stack's Redis."""
    workers = []
    script = str(Path(__file__).with_name("noop_worker.py"))
    env = child_environment(settings, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    try:
        for index in range(2):
            log_path = run_dir / f"noop-{index}.log"
            with open(log_path, "wb") as log_file:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, script, f"noop{index}"],
                        env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )  # fmt: skip
            wait_until(lambda path=log_path: "ready." in path.read_text(errors="replace"), "noop worker")
        yield
    finally:
        stop_processes(workers)


class BareCelery:
    """Round trips of a no-op task: send, run on a worker, result back through the Redis backend."""

    def __init__(self, settings: Settings) -> None:
        self.app = make_noop_app(settings)

    def one(self, index: int) -> float:
        started = time.perf_counter()
        self.app.send_task(NOOP_TASK, args=[index], queue=NOOP_QUEUE).get(timeout=30)
        return time.perf_counter() - started

    def burst(self, count: int) -> float:
        started = time.perf_counter()
        pending = [self.app.send_task(NOOP_TASK, args=[index], queue=NOOP_QUEUE) for index in range(count)]
        for result in pending:
            result.get(timeout=120)
        return time.perf_counter() - started


class FullJobs:
    """Whole smartseg jobs: one POST with `Prefer: wait` that returns once the job has succeeded.

    The load generator shares the machine's two cores with what it measures, so it is kept lean: one
    keep-alive `http.client` connection per thread (httpx would cost the server ~1 ms of CPU per job).
    """

    def __init__(self, api_url: str) -> None:
        self.address = urlsplit(api_url)
        self.image_url = tiny_image_url()
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection(self.address.hostname, self.address.port)
        connection: http.client.HTTPConnection = self.local.connection
        return connection

    def one(self, index: int) -> float:
        body = json.dumps({"image_url": self.image_url, "prompt": "red square", "region": REGIONS[index % 2]})
        headers = {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
            "Prefer": "wait=30",
        }
        started = time.perf_counter()
        connection = self._connection()
        connection.request("POST", "/v1/segmentations", body=body, headers=headers)
        job = json.loads(connection.getresponse().read())
        elapsed = time.perf_counter() - started
        if job.get("status") != "succeeded":
            raise RuntimeError(f"bench job did not succeed within its wait: {job}")
        return elapsed

    def burst(self, count: int) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(SUBMIT_THREADS) as pool:
            list(pool.map(self.one, range(count)))
        return time.perf_counter() - started


def measure(bare: BareCelery, full: FullJobs, jobs: int, rounds: int) -> dict[str, dict[str, float]]:
    """Both kinds in alternating rounds, so drift in machine speed hits them alike."""
    chunk = jobs // rounds
    latencies: dict[str, list[float]] = {"bare": [], "full": []}
    burst_s = {"bare": 0.0, "full": 0.0}
    for kind in (bare, full):  # warm-up: connections, pools, caches
        for index in range(WARMUP):
            kind.one(index)
    for _ in range(rounds):
        for name, kind in (("bare", bare), ("full", full)):
            latencies[name] += [kind.one(index) for index in range(chunk)]
        for name, kind in (("bare", bare), ("full", full)):
            burst_s[name] += kind.burst(chunk)
    return {name: summary(latencies[name], chunk * rounds, burst_s[name]) for name in ("bare", "full")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--jobs", type=int, default=500, help="per kind, for latency and again for throughput"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds the jobs are split into")
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="smartseg-bench-"))
    settings = Settings().updated(
        **{
            "regions": REGIONS,
            "api_key_hashes": [hash_api_key(API_KEY)],
            "api_port": 0,
            "log_level": "WARNING",
            # The limiter runs on every request (its cost is measured) but never refuses the bench's burst.
            "rate_limit_per_s": 1e6,
            "rate_limit_burst": 1_000_000,
        }
    )
    stack = Stack(settings, run_dir).start()
    try:
        with noop_workers(stack.settings, run_dir):
            results = measure(BareCelery(stack.settings), FullJobs(stack.api_url), args.jobs, args.rounds)
    finally:
        stack.stop()
    bare, full = results["bare"], results["full"]
    ratios = {
        "p50_latency_vs_bare": round(full["p50_ms"] / bare["p50_ms"], 2),
        "p99_latency_vs_bare": round(full["p99_ms"] / bare["p99_ms"], 2),
        "throughput_vs_bare": round(full["throughput_per_s"] / bare["throughput_per_s"], 3),
    }
    targets = {"p50_latency_vs_bare_max": 5.0, "throughput_vs_bare_min": 0.25}
    met = ratios["p50_latency_vs_bare"] <= 5.0 and ratios["throughput_vs_bare"] >= 0.25
    report = {"jobs": args.jobs, "rounds": args.rounds, "workers": 2, "bare_celery": bare,
              "smartseg_full_job": full, "ratios": ratios, "targets": targets,
              "targets_met": met}  # fmt: skip
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'jobs/s':>10}")
    for name, row in (("bare Celery no-op", bare), ("smartseg full job", full)):
        print(
            f"{name:24}{row['p50_ms']:>10}{row['p99_ms']:>10}{row['mean_ms']:>10}{row['throughput_per_s']:>10}"
        )
    print(f"{'ratio (full / bare)':24}{ratios['p50_latency_vs_bare']:>10}{ratios['p99_latency_vs_bare']:>10}"
          f"{'':>10}{ratios['throughput_vs_bare']:>10}")  # fmt: skip
    print(f"targets: p50 <= 5x bare, throughput >= 0.25x bare -> {'met' if met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
