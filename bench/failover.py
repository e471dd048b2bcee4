"""Failover under load: two regions, a steady submit rate, one region's workers SIGKILLed mid-stream.

Per trial: jobs go to the doomed region at a steady rate, faster than its worker runs them (each image
download takes --fetch-delay seconds from a loopback server), so work is queued there and one job is
running when the doomed worker is killed; submitting goes on for a few seconds more (the region's
heartbeat stays fresh for up to its TTL, so placement keeps sending work there). Everything is counted
from the job records (each job's `history`: where it was queued,
moved, started, and how each run ended), not from the bill:

- rerouted: the jobs placed in the doomed region before the kill that ran in the other one: those queued
  at the kill (their messages moved) and the one running (its run killed, requeued when its lease ran
  out). From the kill: time until the first of them started in the survivor, until the last moved one
  was done, and until the killed run's job was done. Jobs placed in the doomed region after the kill and
  jobs sent straight to the survivor are counted apart, so the figures measure the failover, not the end
  of the submit window.
- runs started (`started` steps), runs that reached the finish step (`finished` or `refused`), runs killed
  (started, never reached it), and completions per job (`finished` steps: must be exactly 1 for each).
- lost (a job not succeeded) and billed runs against succeeded jobs.

Several trials, each with a fresh doomed worker. Saves bench/results/failover.json. Target: median time to
the first rerouted job <= heartbeat TTL + 1 s. The baseline in the same run is the heartbeat TTL itself:
the earliest a dead region can be noticed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loopback import stack_settings, timestamp
from smartseg.api.auth import OWNER_ID_CHARS
from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.jobstore import JobStore
from smartseg.testing.api_client import JsonClient
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import generate_scene

RESULTS = Path(__file__).resolve().parent / "results" / "failover.json"
# Per-trial counts the summary adds up.
SUMMED = (
    "jobs",
    "placed_in_doomed_before_kill",
    "rerouted",
    "moved_queued",
    "killed_running",
    "placed_in_doomed_after_kill",
    "sent_straight_to_survivor",
    "runs_started",
    "runs_reached_finish",
    "runs_killed",
    "jobs_run_twice",
    "completed_twice",
    "lost",
    "billed_runs",
    "billed_minus_succeeded",
)
DOOMED, SURVIVOR = "us-east", "eu-west"


def scene_png() -> bytes:
    buffer = io.BytesIO()
    generate_scene(seed=70).image.save(buffer, format="PNG")
    return buffer.getvalue()


def trial(
    stack: Stack, api_key: str, image: str, rate_per_s: float, before_s: float, after_s: float
) -> dict[str, Any]:
    worker = stack.workers[DOOMED]
    owner = hash_api_key(api_key)[:OWNER_ID_CHARS]
    store = JobStore.from_settings(stack.settings)
    billed_before = store.usage(owner)[0]
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
        done = [client.wait(job["id"], timeout_s=stack.settings.lease_s + 120) for job in submitted]
    billed = store.usage(owner)[0] - billed_before
    stack.start_worker(DOOMED)  # for the next trial
    stack.wait_for_workers()
    return counted(done, killed_at, billed)


def counted(done: list[dict[str, Any]], killed_at: float, billed: int) -> dict[str, Any]:
    """A trial's figures, from the jobs' records as the API returns them once they ended."""

    def steps(job: dict[str, Any], event: str, region: str | None = None) -> list[dict[str, Any]]:
        return [s for s in job["history"] if s["event"] == event and region in (None, s["region"])]

    def placed(job: dict[str, Any]) -> tuple[str, float]:
        first = job["history"][0]
        return first["region"], timestamp(first["at"])

    before_kill = [job for job in done if placed(job)[0] == DOOMED and placed(job)[1] < killed_at]
    rerouted = [job for job in before_kill if steps(job, "started", SURVIVOR)]
    moved = [job for job in rerouted if not steps(job, "started", DOOMED)]
    killed_run = [job for job in rerouted if steps(job, "started", DOOMED)]
    after_kill = [job for job in done if placed(job)[0] == DOOMED and placed(job)[1] >= killed_at]

    def since_kill(times: list[float]) -> float | None:
        return round(max(times) - killed_at, 3) if times else None

    started = sum(len(steps(job, "started")) for job in done)
    reached_finish = sum(len(steps(job, "finished")) + len(steps(job, "refused")) for job in done)
    completions = Counter(len(steps(job, "finished")) for job in done)
    succeeded = sum(job["status"] == "succeeded" for job in done)
    return {
        "jobs": len(done),
        "placed_in_doomed_before_kill": len(before_kill),
        "rerouted": len(rerouted),
        "moved_queued": len(moved),
        "killed_running": len(killed_run),
        "placed_in_doomed_after_kill": len(after_kill),
        "sent_straight_to_survivor": sum(placed(job)[0] == SURVIVOR for job in done),
        "first_rerouted_running_s": round(
            min(timestamp(steps(j, "started", SURVIVOR)[0]["at"]) for j in rerouted) - killed_at, 3
        )
        if rerouted
        else None,
        "last_moved_done_s": since_kill([timestamp(j["finished_at"]) for j in moved]),
        "killed_run_done_s": since_kill([timestamp(j["finished_at"]) for j in killed_run]),
        "runs_started": started,
        "runs_reached_finish": reached_finish,
        "runs_killed": started - reached_finish,
        "jobs_run_twice": sum(len(steps(job, "started")) > 1 for job in done),
        "completions_per_job": {str(times): jobs for times, jobs in sorted(completions.items())},
        "completed_twice": sum(times > 1 for times in completions.elements()),
        "lost": len(done) - succeeded,
        "billed_runs": billed,
        "billed_minus_succeeded": billed - succeeded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="jobs submitted per second")
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of load after the kill")
    parser.add_argument("--fetch-delay", type=float, default=0.1, help="seconds each image download takes")
    args = parser.parse_args()
    api_key = f"sk-failover-{secrets.token_hex(8)}"
    settings = stack_settings(regions=[DOOMED, SURVIVOR], api_key_hashes=[hash_api_key(api_key)])
    delays = {"scene.png": args.fetch_delay}
    with serve_pngs({"scene.png": scene_png()}, delays_s=delays) as images:
        stack = Stack(settings, Path(tempfile.mkdtemp(prefix="smartseg-failover-"))).start()
        try:
            trials = []
            for index in range(args.trials):
                result = trial(stack, api_key, f"{images}/scene.png", args.rate, args.before, args.after)
                print(f"trial {index + 1}: {json.dumps(result)}", flush=True)
                trials.append(result)
        finally:
            stack.stop()
    ttl = stack.settings.heartbeat_ttl_s
    firsts = [t["first_rerouted_running_s"] for t in trials if t["first_rerouted_running_s"] is not None]
    lasts = [t["last_moved_done_s"] for t in trials if t["last_moved_done_s"] is not None]
    killed = [t["killed_run_done_s"] for t in trials if t["killed_run_done_s"] is not None]
    total = {name: sum(t[name] for t in trials) for name in SUMMED}
    summary = {
        "median_first_rerouted_running_s": round(statistics.median(firsts), 3) if firsts else None,
        "median_last_moved_done_s": round(statistics.median(lasts), 3) if lasts else None,
        "median_killed_run_done_s": round(statistics.median(killed), 3) if killed else None,
        "lease_s": stack.settings.lease_s,
        "baseline_heartbeat_ttl_s": ttl,
        "first_vs_ttl": round(statistics.median(firsts) / ttl, 3) if firsts else None,
        **total,
        "every_job_completed_once": all(set(t["completions_per_job"]) == {"1"} for t in trials),
    }
    met = bool(firsts) and summary["median_first_rerouted_running_s"] <= ttl + 1
    report = {
        "trials": trials,
        "summary": summary,
        "target": "median first rerouted job running <= heartbeat TTL + 1 s; 0 lost; every job completed "
        "exactly once; billed runs = succeeded jobs",
        "targets_met": met
        and not summary["lost"]
        and summary["every_job_completed_once"]
        and not summary["billed_minus_succeeded"],
        "settings": {
            "rate_per_s": args.rate,
            "before_s": args.before,
            "after_s": args.after,
            "fetch_delay_s": args.fetch_delay,
            "ttl_s": ttl,
            "lease_s": stack.settings.lease_s,
        },
    }
    print(json.dumps(summary, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {RESULTS}\n\nREADME table:\n{readme_table(report)}")


def readme_table(report: dict[str, Any]) -> str:
    """The README's table of a saved report (tests/unit/test_bench_tables.py keeps the two equal)."""
    summary, trials = report["summary"], report["trials"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    def per_trial(name: str) -> str:
        return ", ".join(seconds(trial[name]) for trial in trials)

    ttl = summary["baseline_heartbeat_ttl_s"]
    lease = report["settings"]["lease_s"]
    rows = [
        "| | median | per trial |",
        "|---|---|---|",
        f"| kill → first rerouted job running | **{seconds(summary['median_first_rerouted_running_s'])} s** "
        f"(target ≤ TTL + 1 s = {ttl + 1:g} s; {summary['first_vs_ttl']:.2f}x the TTL) "
        f"| {per_trial('first_rerouted_running_s')} |",
        f"| kill → last moved job done | {seconds(summary['median_last_moved_done_s'])} s "
        f"| {per_trial('last_moved_done_s')} |",
        f"| kill → killed run's job done (lease {lease:g} s) "
        f"| {seconds(summary['median_killed_run_done_s'])} s | {per_trial('killed_run_done_s')} |",
        f"| rerouted: moved while queued + killed while running | {summary['rerouted']} "
        f"({summary['moved_queued']} + {summary['killed_running']}) of "
        f"{summary['placed_in_doomed_before_kill']} placed in {DOOMED} before the kill "
        f"| {', '.join(str(t['rerouted']) for t in trials)} |",
        f"| runs started / reached the finish step / killed | {summary['runs_started']} / "
        f"{summary['runs_reached_finish']} / {summary['runs_killed']} | |",
        f"| jobs completed exactly once / twice | "
        f"{'all ' + str(summary['jobs']) if summary['every_job_completed_once'] else 'NOT all'} / "
        f"**{summary['completed_twice']}** | |",
        f"| jobs lost / billed runs - succeeded jobs | **{summary['lost']} / "
        f"{summary['billed_minus_succeeded']}** | |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
