"""Failover under load: two regions, a steady submit rate, one region's workers SIGKILLed mid-stream.

Per trial: jobs go to the doomed region at a steady rate (its heartbeat is still fresh for a while after
the kill, so placement keeps sending work there); the doomed worker is killed; submitting goes on for a
few seconds more. Reported per trial, from the kill: time until the first job that had been placed in the
doomed region starts running in the other one, and until the last such job is done; jobs lost (not
succeeded) and jobs run twice (billed runs minus jobs). Several trials, each with a fresh doomed worker.
Saves bench/results/failover.json. Target: median time to the first rerouted job <= heartbeat TTL + 1 s.
The baseline in the same run is the heartbeat TTL itself: the earliest a dead region can be noticed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smartseg.api.auth import OWNER_ID_CHARS
from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobstore import JobStore
from smartseg.shared.settings import Settings
from smartseg.testing.api_client import JsonClient
from smartseg.testing.scenes import generate_scene

RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"
DOOMED, SURVIVOR = "us-east", "eu-west"


def data_url() -> str:
    import base64
    import io

    buffer = io.BytesIO()
    generate_scene(seed=70).image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def trial(stack: Stack, api_key: str, rate_per_s: float, before_s: float, after_s: float) -> dict[str, Any]:
    worker = stack.workers[DOOMED]
    owner = hash_api_key(api_key)[:OWNER_ID_CHARS]
    store = JobStore.from_settings(stack.settings)
    billed_before = store.usage(owner)[0]
    image = data_url()
    submitted: list[dict[str, Any]] = []
    stop = threading.Event()

    def submit() -> None:
        with JsonClient(stack.api_url, api_key) as client:
            while not stop.is_set():
                submitted.append(
                    client.create({"image_url": image, "prompt": "largest shape", "region": DOOMED})
                )
                stop.wait(1 / rate_per_s)

    thread = threading.Thread(target=submit)
    thread.start()
    time.sleep(before_s)
    killed_at = time.time()
    os.killpg(worker.pid, signal.SIGKILL)
    time.sleep(after_s)
    stop.set()
    thread.join()
    with JsonClient(stack.api_url, api_key) as client:
        done = [client.wait(job["id"], timeout_s=120) for job in submitted]
    placed_in_doomed = [job for job in done if job["region"] == SURVIVOR and job["input"]["region"] == DOOMED]
    rerouted = [job for job in placed_in_doomed if _time(job["started_at"]) > killed_at]
    lost = sum(job["status"] != "succeeded" for job in done)
    billed = store.usage(owner)[0] - billed_before
    stack.start_worker(DOOMED)  # for the next trial
    stack.wait_for_workers()
    return {
        "jobs": len(done),
        "rerouted": len(rerouted),
        "first_rerouted_running_s": round(min(_time(j["started_at"]) for j in rerouted) - killed_at, 3)
        if rerouted
        else None,
        "last_rerouted_done_s": round(max(_time(j["finished_at"]) for j in rerouted) - killed_at, 3)
        if rerouted
        else None,
        "lost": lost,
        "run_twice": billed - (len(done) - lost),
    }


def _time(iso: str | None) -> float:
    from datetime import datetime

    return datetime.fromisoformat((iso or "").replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="jobs submitted per second")
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of load after the kill")
    args = parser.parse_args()
    api_key = f"sk-failover-{secrets.token_hex(8)}"
    settings = Settings().updated(
        regions=[DOOMED, SURVIVOR],
        api_key_hashes=[hash_api_key(api_key)],
        api_port=0,
        log_level="WARNING",
        rate_limit_per_s=1e6,  # never refuses the bench's load
        rate_limit_burst=1_000_000,
    )
    stack = Stack(settings, Path(tempfile.mkdtemp(prefix="smartseg-failover-"))).start()
    try:
        trials = []
        for index in range(args.trials):
            result = trial(stack, api_key, args.rate, args.before, args.after)
            print(f"trial {index + 1}: {json.dumps(result)}", flush=True)
            trials.append(result)
    finally:
        stack.stop()
    ttl = stack.settings.heartbeat_ttl_s
    firsts = [t["first_rerouted_running_s"] for t in trials if t["first_rerouted_running_s"] is not None]
    lasts = [t["last_rerouted_done_s"] for t in trials if t["last_rerouted_done_s"] is not None]
    summary = {
        "median_first_rerouted_running_s": round(statistics.median(firsts), 3) if firsts else None,
        "median_last_rerouted_done_s": round(statistics.median(lasts), 3) if lasts else None,
        "baseline_heartbeat_ttl_s": ttl,
        "first_vs_ttl": round(statistics.median(firsts) / ttl, 3) if firsts else None,
        "lost": sum(t["lost"] for t in trials),
        "run_twice": sum(t["run_twice"] for t in trials),
    }
    met = bool(firsts) and summary["median_first_rerouted_running_s"] <= ttl + 1 and not summary["lost"]
    report = {
        "trials": trials,
        "summary": summary,
        "target": "median first rerouted job running <= heartbeat TTL + 1 s; 0 lost; 0 run twice",
        "targets_met": met and not summary["run_twice"],
        "settings": {"rate_per_s": args.rate, "before_s": args.before, "after_s": args.after, "ttl_s": ttl},
    }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
