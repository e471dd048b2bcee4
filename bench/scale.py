"""Scale: a deep queue behind a blocked worker, its region killed; then the Redis primary killed under load.

Part 1, one region's failover at depth. Two regions; the doomed region's only worker is blocked on a job
whose image download never ends (its heartbeat stays fresh, so placement keeps the region), and --jobs
jobs (20,000) are submitted to that region through the API by --submitters threads. Reported: the submit
rate (the first and the last --window jobs against each other: does submitting slow down as the queue
grows?), Redis bytes per queued job (used_memory before and after), the latency of a page of the job list
at that depth against the same page with --window jobs queued, then the doomed worker is SIGKILLed and
the survivor (--survivor-workers workers) runs everything: time from the kill to the first moved job
running and to the last job done, the messages the router sent per moved job (its own counter,
`smartseg_router_messages_sent_total`; target 1.0) and the messages the survivor's workers took per job
(`smartseg_worker_messages_total`), Redis bytes per finished job, and from the job records: lost (not
succeeded), completed twice (two `finished` steps), runs started and killed.

Part 2, Sentinel failover. A Valkey primary, two replicas and three Sentinels; the stack pointed at the
Sentinels with acknowledged writes (SMARTSEG_REDIS_ACK_REPLICAS=1); a steady submit load; the primary
SIGKILLed. Reported: time from the kill to the first job accepted again (a 202 to a submit sent after the
kill), submits refused meanwhile, and for every accepted job: lost, completed twice, billed runs against
billable jobs.

Saves bench/results/scale.json (`messages_per_moved_job`, `lost`, `completed_twice` among the rest).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loopback import stack_settings
from smartseg.api.auth import OWNER_ID_CHARS
from smartseg.cli.launcher import Stack, child_environment
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobstore import JobRecord, JobStore
from smartseg.shared.keys import INTERACTIVE
from smartseg.shared.ports import free_port_run
from smartseg.shared.queues import Queues
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.settings import Settings
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.redis_sentinel import sentinel_cluster
from smartseg.testing.scenes import generate_scene

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
DOOMED, SURVIVOR = "us-east", "eu-west"
PROMPT = "largest shape"
BLOCKED_S = 3600.0  # the blocker's download: longer than the bench
LIST_PAGE = 100
LIST_SAMPLES = 20
DRAIN_TIMEOUT_S = 1800.0
SENTINEL_SUBMIT_EVERY_S = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--submitters", type=int, default=8, help="threads submitting at once")
    parser.add_argument("--window", type=int, default=1000, help="jobs in the first and last rate windows")
    parser.add_argument("--survivor-workers", type=int, default=2)
    parser.add_argument("--sentinel-load-s", type=float, default=15.0, help="0: skip part 2")
    args = parser.parse_args()
    report: dict[str, Any] = {"region_failover": region_failover(args)}
    print(json.dumps(report["region_failover"], indent=2), flush=True)
    if args.sentinel_load_s:
        report["sentinel_failover"] = sentinel_failover(args.sentinel_load_s)
        print(json.dumps(report["sentinel_failover"], indent=2), flush=True)
    region, sentinel = report["region_failover"], report.get("sentinel_failover", {})
    report |= {
        "messages_per_moved_job": region["messages_per_moved_job"],
        "lost": region["lost"] + sentinel.get("lost", 0),
        "completed_twice": region["completed_twice"] + sentinel.get("completed_twice", 0),
        "target": "messages per moved job 1.0; 0 lost; 0 completed twice; billed runs = billable jobs",
    }
    report["targets_met"] = (
        report["messages_per_moved_job"] <= 1.0
        and not report["lost"]
        and not report["completed_twice"]
        and not sentinel.get("billed_minus_billable", 0)
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}\n\nREADME table:\n{readme_table(report)}")


def readme_table(report: dict[str, Any]) -> str:
    """The README's table of a saved report (tests/unit/test_bench_tables.py keeps the two equal)."""
    region, sentinel = report["region_failover"], report["sentinel_failover"]
    submit, listing = region["submit"], region["list_page_ms"]
    shallow, deep = (f"{value:g} ms" for name, value in listing.items() if name.startswith("at_"))
    depths = [name.removeprefix("at_") for name in listing if name.startswith("at_")]
    rows = [
        "| | |",
        "|---|---|",
        f"| jobs queued behind the blocked worker | {region['queued_depth_at_kill']:,} |",
        f"| submit rate ({region['settings']['submitters']} threads) | {submit['jobs_per_s']:g} jobs/s; "
        f"last {depths[0]} "
        f"{submit['last_window_jobs_per_s']:g}/s against first {depths[0]} "
        f"{submit['first_window_jobs_per_s']:g}/s ({submit['last_vs_first']:.2f}x) |",
        f"| Redis bytes per queued / finished job | {region['redis_bytes_per_queued_job']:,} / "
        f"{region['redis_bytes_per_finished_job']:,} |",
        f"| newest page of 100 jobs at {int(depths[1]):,} / {int(depths[0]):,} jobs | {deep} / {shallow} "
        f"({listing['deep_vs_shallow']:.2f}x) |",
        f"| kill → first moved job running / all done | {region['first_moved_running_s']:.2f} s / "
        f"{region['drain_s']:.1f} s ({region['settings']['survivor_workers']} survivor workers) |",
        f"| messages per moved job (router / survivor workers) "
        f"| **{region['messages_per_moved_job']:.2f}** / "
        f"{region['survivor_messages_per_job']:.2f} ({region['router_messages_sent']:,} for "
        f"{region['moved_jobs']:,} jobs) |",
        f"| runs started / killed | {region['runs_started']:,} / {region['runs_killed']} |",
        f"| lost / completed twice | **{region['lost']} / {region['completed_twice']}** |",
        f"| Sentinel: kill → first job accepted again | {sentinel['first_accepted_after_kill_s']:.2f} s "
        f"(slowest submit answer {sentinel['slowest_submit_answer_s']:.2f} s) |",
        f"| Sentinel: submits accepted / refused | {sentinel['accepted']} "
        f"({sentinel['accepted_before_kill']} before the kill) / {sentinel['refused']} |",
        f"| Sentinel: lost / completed twice / billed runs - billable jobs | **{sentinel['lost']} / "
        f"{sentinel['completed_twice']} / {sentinel['billed_minus_billable']}** |",
    ]
    return "\n".join(rows)


def scene_png(width: int = 160, height: int = 120) -> bytes:
    buffer = io.BytesIO()
    generate_scene(seed=71).image.resize((width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def bench_settings(api_key: str, **updates: Any) -> Settings:
    return stack_settings(
        regions=[DOOMED, SURVIVOR],
        api_key_hashes=[hash_api_key(api_key)],
        max_active_jobs=0,  # 20,000 queued for one key
        **updates,
    )


def region_failover(args: argparse.Namespace) -> dict[str, Any]:
    api_key = f"sk-scale-{secrets.token_hex(8)}"
    settings = bench_settings(
        api_key,
        metrics_port=free_port_run(3 + 1 + args.survivor_workers),
        fetch_read_timeout_s=BLOCKED_S,
        fetch_total_timeout_s=BLOCKED_S,
        lease_s=10.0,  # the blocker's run, killed, runs again this soon after
    )
    delays = {"blocker.png": BLOCKED_S}
    images = {"blocker.png": scene_png(), "scene.png": scene_png()}
    with serve_pngs(images, delays_s=delays) as image_base, running_stack(settings) as stack:
        redis = redis_client(stack.settings.require_redis_url(), stack.settings.redis_timeout_s)
        store = JobStore.from_settings(stack.settings)
        owner = hash_api_key(api_key)[:OWNER_ID_CHARS]
        headers = {"Authorization": f"Bearer {api_key}"}
        survivors = [stack.workers[SURVIVOR]] + [
            start_worker(stack, SURVIVOR, index) for index in range(1, args.survivor_workers)
        ]
        stack.wait_for_workers()
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as api:
            blocker = submit(api, f"{image_base}/blocker.png")
            until(lambda: status(store, blocker) == "running", timeout_s=30)
            memory_empty = used_memory(redis)
            scene = f"{image_base}/scene.png"
            first = submit_many(stack.api_url, headers, scene, args.window, args.submitters)
            list_shallow = list_latency(api)
            rest = submit_many(stack.api_url, headers, scene, args.jobs - args.window, args.submitters)
            list_deep = list_latency(api)
        memory_queued = used_memory(redis)
        depth = Queues(redis, store.keys).length(DOOMED, INTERACTIVE)
        job_ids = [blocker, *first.ids, *rest.ids]
        last = rest.window_rate(args.window, from_end=True)
        router_url = metrics_url(stack, "router")
        worker_urls = [metrics_url(stack, name) for name in survivor_names(args.survivor_workers)]
        router_before = counter(router_url, "smartseg_router_messages_sent_total", region=SURVIVOR)
        taken_before = sum(counter(url, "smartseg_worker_messages_total") for url in worker_urls)

        killed_at = time.time()
        os.killpg(stack.workers[DOOMED].pid, signal.SIGKILL)
        delays["blocker.png"] = 0.0  # its next run downloads at once
        active = store.keys.owner_active(owner)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while redis.zcard(active) and time.monotonic() < deadline:
            time.sleep(0.5)
        memory_finished = used_memory(redis)
        router_sent = (
            counter(router_url, "smartseg_router_messages_sent_total", region=SURVIVOR) - router_before
        )
        taken = sum(counter(url, "smartseg_worker_messages_total") for url in worker_urls) - taken_before
        records = list(read_records(store, job_ids))
        for process in survivors[1:]:
            process.terminate()
        redis.close()
    finished = [record for record in records if record is not None]
    started = [_started_in(record, SURVIVOR) for record in finished]
    moved = [record for record in finished if record.region == SURVIVOR]
    return {
        "jobs": len(job_ids),
        "submit": {
            "jobs_per_s": round(args.jobs / (first.seconds + rest.seconds), 1),
            "first_window_jobs_per_s": first.window_rate(args.window),
            "last_window_jobs_per_s": last,
            "last_vs_first": round(last / first.window_rate(args.window), 3),
            "refused": first.refused + rest.refused,
        },
        "queued_depth_at_kill": depth,
        "redis_bytes_per_queued_job": round((memory_queued - memory_empty) / args.jobs),
        "redis_bytes_per_finished_job": round((memory_finished - memory_empty) / args.jobs),
        "list_page_ms": {
            f"at_{args.window}": list_shallow,
            f"at_{args.jobs}": list_deep,
            "deep_vs_shallow": round(list_deep / list_shallow, 3),
        },
        "first_moved_running_s": round(min(t for t in started if t) - killed_at, 3),
        "drain_s": round(max(record.finished_at or 0 for record in finished) - killed_at, 3),
        "moved_jobs": len(moved),
        "router_messages_sent": int(router_sent),
        "messages_per_moved_job": round(router_sent / len(moved), 4) if moved else None,
        "survivor_messages_taken": int(taken),
        "survivor_messages_per_job": round(taken / len(moved), 4) if moved else None,
        "runs_started": sum(len(_steps(record, "started")) for record in finished),
        "runs_killed": sum(
            len(_steps(record, "started")) - len(_steps(record, "finished")) - len(_steps(record, "refused"))
            for record in finished
        ),
        "lost": len(job_ids) - sum(record.status.value == "succeeded" for record in finished),
        "completed_twice": sum(len(_steps(record, "finished")) > 1 for record in finished),
        "settings": {
            "submitters": args.submitters,
            "survivor_workers": args.survivor_workers,
            "heartbeat_ttl_s": settings.heartbeat_ttl_s,
            "lease_s": settings.lease_s,
        },
    }


def sentinel_failover(load_s: float) -> dict[str, Any]:
    api_key = f"sk-scale-{secrets.token_hex(8)}"
    with sentinel_cluster(replicas=2) as cluster:  # one left to confirm writes once the primary is gone
        settings = bench_settings(
            api_key, redis_url=cluster.url, lease_s=5.0, redis_timeout_s=1.0, redis_ack_replicas=1
        )
        headers = {"Authorization": f"Bearer {api_key}"}
        with serve_pngs({"scene.png": scene_png()}) as image_base, running_stack(settings) as stack:
            answers: list[tuple[float, float, int, str | None]] = []  # sent, answered, status, job id
            body = {"image_url": f"{image_base}/scene.png", "prompt": PROMPT}

            def load() -> None:
                with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as api:
                    deadline = time.monotonic() + load_s
                    while time.monotonic() < deadline:
                        sent = time.time()
                        try:
                            answer = api.post("/v1/segmentations", json=body)
                        except httpx.HTTPError:  # no answer at all: counted as refused, code 0
                            answers.append((sent, time.time(), 0, None))
                        else:
                            accepted = answer.json()["id"] if answer.status_code == 202 else None
                            answers.append((sent, time.time(), answer.status_code, accepted))
                        time.sleep(SENTINEL_SUBMIT_EVERY_S)

            submitter = threading.Thread(target=load)
            submitter.start()
            time.sleep(load_s / 3)
            killed_at = time.time()
            os.kill(cluster.primary_pid, signal.SIGKILL)
            submitter.join()
            accepted = [job_id for _, _, code, job_id in answers if job_id]
            store = JobStore.from_settings(stack.settings)
            owner = hash_api_key(api_key)[:OWNER_ID_CHARS]
            until(lambda: all(ended(record) for record in store.get_many(accepted)), timeout_s=120)
            records = store.get_many(accepted)
            billed = store.usage(owner)[0]
            store.close()
    finished = [record for record in records if record is not None]
    after_kill = [answered for sent, answered, code, _ in answers if code == 202 and sent >= killed_at]
    refused = [code for sent, _, code, _ in answers if code != 202]
    billable = sum(
        record.status.value == "succeeded"
        and any(result.get("result") == "match" for result in record.prompt_results)
        for record in finished
    )
    return {
        "submits": len(answers),
        "accepted": len(accepted),
        "accepted_before_kill": sum(1 for sent, _, code, _ in answers if code == 202 and sent < killed_at),
        "refused": len(refused),
        "refused_codes": sorted(set(refused)),
        "first_accepted_after_kill_s": round(min(after_kill) - killed_at, 3) if after_kill else None,
        "slowest_submit_answer_s": round(max(answered - sent for sent, answered, _, _ in answers), 3),
        "lost": len(accepted) - sum(record.status.value == "succeeded" for record in finished),
        "completed_twice": sum(len(_steps(record, "finished")) > 1 for record in finished),
        "billed_runs": billed,
        "billable_jobs": billable,
        "billed_minus_billable": billed - billable,
        "settings": {"load_s": load_s, "submit_every_s": SENTINEL_SUBMIT_EVERY_S, "replicas": 2},
    }


@contextmanager
def running_stack(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, Path(tempfile.mkdtemp(prefix="smartseg-scale-"))).start()
    try:
        yield stack
    finally:
        stack.stop()


def start_worker(stack: Stack, region: str, index: int) -> subprocess.Popen[bytes]:
    """One more worker in ``region`` (the Stack starts one per region), serving its metrics on the next
    port of the stack's run."""
    name, first_port = f"worker-{region}-{index}", stack.settings.metrics_port
    assert first_port, "the bench's stack serves metrics"
    port = stack.metrics_ports.setdefault(name, first_port + len(stack.metrics_ports))
    env = child_environment(stack.settings, SMARTSEG_REGION=region, SMARTSEG_METRICS_PORT=str(port))
    with open(stack.run_dir / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "smartseg.worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def survivor_names(count: int) -> list[str]:
    return [f"worker-{SURVIVOR}"] + [f"worker-{SURVIVOR}-{index}" for index in range(1, count)]


class Submitted:
    """Jobs submitted by several threads: their ids, and when each answer came."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.answered: list[float] = []
        self.refused = 0
        self.seconds = 0.0
        self.lock = threading.Lock()

    def window_rate(self, window: int, from_end: bool = False) -> float:
        times = sorted(self.answered)
        times = times[-window:] if from_end else times[:window]
        return round((len(times) - 1) / (times[-1] - times[0]), 1)


def submit(api: httpx.Client, image_url: str) -> str:
    answer = api.post("/v1/segmentations", json={"image_url": image_url, "prompt": PROMPT, "region": DOOMED})
    answer.raise_for_status()
    return str(answer.json()["id"])


def submit_many(api_url: str, headers: dict[str, str], image_url: str, count: int, threads: int) -> Submitted:
    done = Submitted()
    body = {"image_url": image_url, "prompt": PROMPT, "region": DOOMED}

    def run(share: int) -> None:
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as api:
            for _ in range(share):
                answer = api.post("/v1/segmentations", json=body)
                with done.lock:
                    if answer.status_code == 202:
                        done.ids.append(answer.json()["id"])
                        done.answered.append(time.monotonic())
                    else:
                        done.refused += 1

    shares = [count // threads + (index < count % threads) for index in range(threads)]
    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(share,)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.seconds = time.monotonic() - started
    return done


def list_latency(api: httpx.Client) -> float:
    """Median milliseconds of the newest page of the owner's jobs."""
    timings = []
    for _ in range(3):  # warm: the first pages of a fresh depth read cold memory
        api.get("/v1/segmentations", params={"limit": LIST_PAGE})
    for _ in range(LIST_SAMPLES):
        started = time.perf_counter()
        answer = api.get("/v1/segmentations", params={"limit": LIST_PAGE})
        timings.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200 and len(answer.json()["data"]) == LIST_PAGE, answer.text[:200]
    return round(statistics.median(timings), 2)


def used_memory(redis: Any) -> int:
    return int(redis.info("memory")["used_memory"])


def metrics_url(stack: Stack, process: str) -> str:
    return f"http://{stack.settings.metrics_host}:{stack.metrics_ports[process]}/metrics"


def counter(url: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include ``labels``."""
    text = httpx.get(url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def read_records(store: JobStore, job_ids: list[str]) -> Iterator[JobRecord | None]:
    for start in range(0, len(job_ids), 500):
        yield from store.get_many(job_ids[start : start + 500])


def _steps(record: JobRecord, event: str) -> list[dict[str, Any]]:
    return [step for step in record.history if step["event"] == event]


def _started_in(record: JobRecord, region: str) -> float | None:
    times = [step["at"] for step in _steps(record, "started") if step["region"] == region]
    return min(times) if times else None


def status(store: JobStore, job_id: str) -> str | None:
    record = store.get(job_id)
    return record.status.value if record else None


def ended(record: JobRecord | None) -> bool:
    """Ended, or gone (lost: counted as such)."""
    return record is None or record.status.is_terminal()


def until(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
