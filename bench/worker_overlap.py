"""Jobs ahead against one job at a time: end-to-end jobs/s of a real worker whose image downloads are slow.

In one run, two stacks in turn (same machine, same settings but SMARTSEG_WORKER_JOBS_AHEAD): one worker
with jobs ahead (the default 2) and one with none (each job downloads, decodes, runs, encodes and uploads
before the next starts). Each image download takes --fetch-delay seconds (100 ms) from a loopback server
that delays its answer, as a real image host does. --jobs jobs are submitted at once; jobs/s is counted
from the first job's creation to the last job's end on the Redis clock (the job records). The
one-at-a-time worker is the baseline; target: overlapped >= 1.2x it on the CPU, where the download no
longer adds to each job. Saves bench/results/worker_overlap_<device>.json (`overlapped_vs_sequential`).
"""

from __future__ import annotations

import argparse
import io
import json
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loopback import stack_settings, timestamp
from bench.pipeline_cpu import CONFIGS
from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.settings import Settings
from smartseg.testing.api_client import JsonClient
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import generate_scene

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 1.2
REGION = "us-east"


def scene_png(seed: int) -> bytes:
    buffer = io.BytesIO()
    generate_scene(seed=seed).image.save(buffer, format="PNG")
    return buffer.getvalue()


def throughput(settings: Settings, image_urls: list[str], jobs: int) -> dict[str, Any]:
    api_key = f"sk-overlap-{secrets.token_hex(8)}"
    stack = Stack(
        settings.updated(api_key_hashes=[hash_api_key(api_key)]),
        Path(tempfile.mkdtemp(prefix="smartseg-overlap-")),
    ).start()
    try:
        with JsonClient(stack.api_url, api_key) as client:
            client.wait(client.create({"image_url": image_urls[0], "prompt": "largest shape"})["id"])  # warm
            created = [
                client.create({"image_url": image_urls[index % len(image_urls)], "prompt": "largest shape"})
                for index in range(jobs)
            ]
            done = [client.wait(job["id"], timeout_s=600) for job in created]
    finally:
        stack.stop()
    assert all(job["status"] == "succeeded" for job in done), [j["status"] for j in done]
    first = min(timestamp(job["created_at"]) for job in done)
    last = max(timestamp(job["finished_at"]) for job in done)
    waits = sorted(job["metrics"].get("model_wait_s") or 0.0 for job in done)
    return {
        "jobs": jobs,
        "seconds": round(last - first, 3),
        "jobs_per_s": round(jobs / (last - first), 2),
        "median_inference_s": round(sorted(job["metrics"]["inference_s"] for job in done)[jobs // 2], 4),
        "median_model_wait_s": round(waits[jobs // 2], 4),
    }


def measure_overlap(
    pipeline: str,
    device: str,
    jobs: int,
    fetch_delay_s: float,
    jobs_ahead: int | None = None,
    model_dir: Path | None = None,
) -> dict[str, Any]:
    """Both workers in turn on the same jobs; the figures and their ratio."""
    ahead = Settings().worker_jobs_ahead if jobs_ahead is None else jobs_ahead
    models = {"model_dir": str(model_dir), **CONFIGS[pipeline]} if pipeline in CONFIGS else {}
    base = stack_settings(regions=[REGION], pipelines=[pipeline], device=device, **models)
    images = {f"scene-{seed}.png": scene_png(seed) for seed in range(8)}
    with serve_pngs(images, delays_s=dict.fromkeys(images, fetch_delay_s)) as image_base:
        urls = [f"{image_base}/{name}" for name in images]
        sequential = throughput(base.updated(worker_jobs_ahead=0), urls, jobs)
        print(f"one job at a time: {json.dumps(sequential)}", flush=True)
        overlapped = throughput(base.updated(worker_jobs_ahead=ahead), urls, jobs)
        print(f"{ahead} jobs ahead: {json.dumps(overlapped)}", flush=True)
    ratio = round(overlapped["jobs_per_s"] / sequential["jobs_per_s"], 3)
    return {
        "pipeline": pipeline,
        "device": device,
        "fetch_delay_s": fetch_delay_s,
        "jobs_ahead": ahead,
        "sequential": sequential,
        "overlapped": overlapped,
        "overlapped_vs_sequential": ratio,
        "target": f"overlapped_vs_sequential >= {TARGET}",
        "targets_met": ratio >= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--fetch-delay", type=float, default=0.1, help="seconds each image download takes")
    parser.add_argument("--jobs-ahead", type=int, default=None, help="default: the setting's default")
    parser.add_argument("--pipeline", default="lite")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=None, help="for a model pipeline")
    args = parser.parse_args()
    report = measure_overlap(
        args.pipeline, args.device, args.jobs, args.fetch_delay, args.jobs_ahead, args.model_dir
    )
    print(
        json.dumps(
            {
                "overlapped_vs_sequential": report["overlapped_vs_sequential"],
                "targets_met": report["targets_met"],
            }
        )
    )
    out = RESULTS / f"worker_overlap_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
