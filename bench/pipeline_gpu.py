"""Model pipelines batched across jobs, on the CPU here and on a GPU where there is one.

In one run, per pipeline (random weights at the published sizes: timing does not depend on values), on
distinct 640x480 scenes with one prompt each and nothing cached:
- images/s of ``Pipeline.run_many`` at each batch size (1, 2, 4, 8), batch 1 being the baseline;
- peak memory, reset before each pipeline: the device's (``torch.cuda.max_memory_allocated``) on a GPU,
  the process's resident set (VmHWM) on the CPU;
- with ``--compare-dtypes bfloat16,float32`` (a GPU), the mean and worst IoU of the masks the two give for
  the same inputs (target >= 0.98; random weights make this a strict test, real ones agree more);
- end to end: jobs/s of a worker with jobs ahead against a one-at-a-time worker, 100 ms image downloads
  (bench/worker_overlap.py's measurement, `lite` unless --end-to-end-pipeline names another).
Saves bench/results/pipeline_gpu_<device>.json (`overlapped_vs_sequential` among the rest). ``--size tiny``
runs the same on tiny models in seconds (tests/integration/test_bench_pipeline_gpu.py does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline_cpu import CONFIGS, DEFAULT_MODEL_DIR
from bench.worker_overlap import TARGET as OVERLAP_TARGET
from bench.worker_overlap import measure_overlap
from smartseg.shared.jobspec import JobOptions
from smartseg.shared.settings import Settings
from smartseg.testing.random_weights import save_random_model
from smartseg.testing.scenes import generate_scene
from smartseg.worker.models.manifest import write_manifest
from smartseg.worker.models.runtime import Runtime
from smartseg.worker.pipeline.base import ImageJob, Pipeline
from smartseg.worker.pipelines import build_pipeline, model_names, required_models

RESULTS = Path(__file__).resolve().parent / "results"
OPTIONS = JobOptions(box_threshold=0.0, text_threshold=0.0, max_masks=3)
PROMPTS = ("left shoe",)
AGREEMENT_TARGET = 0.98
WIDTH, HEIGHT = 640, 480


def ensure_models(model_dir: Path, names: Sequence[str], size: str) -> None:
    for name in names:
        folder = model_dir / name
        if not (folder / "manifest.json").exists():
            print(f"building random-weight {name} ({size}) in {folder} ...", flush=True)
            save_random_model(name, folder, size=size)  # type: ignore[arg-type]
            write_manifest(folder)


def load(name: str, settings: Settings, model_dir: Path) -> Pipeline:
    runtime = Runtime.choose(settings.device, settings.dtype, settings.torch_threads)
    folders = {path.name: path for path in model_dir.iterdir()}
    return build_pipeline(name, model_names(settings), folders, runtime, embedding_cache_size=0)


def scenes(count: int, seed: int) -> list[np.ndarray]:
    return [np.asarray(generate_scene(seed + index, WIDTH, HEIGHT).image) for index in range(count)]


def images_per_s(pipeline: Pipeline, batch: int, rounds: int) -> float:
    """Median over rounds of images/s of one run_many of ``batch`` new images (one warm-up round first)."""
    rates = []
    for round_ in range(rounds + 1):
        jobs = [ImageJob(image, PROMPTS, OPTIONS) for image in scenes(batch, 1000 * round_ + batch)]
        _synchronize()
        started = time.perf_counter()
        pipeline.run_many(jobs)
        _synchronize()
        if round_:  # the first round warms up
            rates.append(batch / (time.perf_counter() - started))
    return round(statistics.median(rates), 3)


def agreement(
    name: str, settings: Settings, model_dir: Path, dtypes: tuple[str, str], images: int
) -> dict[str, Any]:
    """Mask IoU between runs of the same jobs in two dtypes (masks matched by order)."""
    jobs = [ImageJob(image, PROMPTS, OPTIONS) for image in scenes(images, 7)]
    low, full = (load(name, settings.updated(dtype=dtype), model_dir).run_many(jobs) for dtype in dtypes)
    ious = []
    for low_run, full_run in zip(low, full, strict=True):
        for one, other in zip(low_run.results, full_run.results, strict=True):
            for a, b in zip(one.segments, other.segments, strict=False):
                union = np.logical_or(a.mask, b.mask).sum()
                ious.append(float(np.logical_and(a.mask, b.mask).sum() / union) if union else 1.0)
    return {
        "dtypes": list(dtypes),
        "masks_compared": len(ious),
        "mean_iou": round(statistics.fmean(ious), 4) if ious else 0.0,
        "min_iou": round(min(ious), 4) if ious else 0.0,
    }


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: the resident set's peak starts again from now


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    status = Path("/proc/self/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return round(peak_kb / 1024, 1)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(name: str, settings: Settings, model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    reset_peak_memory(args.device)
    pipeline = load(name, settings, model_dir)
    rates = {}
    for batch in args.batches:
        rates[str(batch)] = images_per_s(pipeline, batch, args.rounds)
        print(f"{name} batch {batch}: {rates[str(batch)]} images/s", flush=True)
    best = max(rates, key=lambda batch: rates[batch])
    result: dict[str, Any] = {
        "images_per_s": rates,
        "best_batch": int(best),
        "best_vs_batch_1": round(rates[best] / rates["1"], 3) if "1" in rates else None,
        "peak_memory_mb": peak_memory_mb(args.device),
        "peak_memory_scope": "pipeline",  # reset before each pipeline
    }
    if args.compare_dtypes:
        dtypes = tuple(args.compare_dtypes.split(","))
        result["dtype_agreement"] = agreement(name, settings, model_dir, dtypes, images=4)  # type: ignore[arg-type]
        result["dtype_agreement"]["target_met"] = result["dtype_agreement"]["min_iou"] >= AGREEMENT_TARGET
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="the model pipelines' dtype (bfloat16 on a GPU)")
    parser.add_argument("--size", choices=["real", "tiny"], default="real", help="published sizes, or tiny")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--pipelines", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--batches", default="1,2,4,8", help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds per batch size (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument(
        "--compare-dtypes", default="", help="mask agreement of two dtypes, e.g. bfloat16,float32 (CUDA only)"
    )
    parser.add_argument("--end-to-end-pipeline", default="lite")
    parser.add_argument("--end-to-end-jobs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.batches = [int(batch) for batch in args.batches.split(",")]
    model_dir = args.model_dir or (DEFAULT_MODEL_DIR if args.size == "real" else DEFAULT_MODEL_DIR / "tiny")
    report: dict[str, Any] = {
        "device": args.device,
        "dtype": args.dtype,
        "size": args.size,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "pipelines": {},
    }
    for name in [name for name in args.pipelines.split(",") if name]:
        settings = Settings().updated(
            model_dir=str(model_dir),
            device=args.device,
            dtype=args.dtype,
            torch_threads=args.threads,
            **CONFIGS[name],
        )
        ensure_models(model_dir, required_models(name, model_names(settings)), args.size)
        report["pipelines"][name] = measure(name, settings, model_dir, args)
    if args.end_to_end_jobs:
        overlap = measure_overlap(
            args.end_to_end_pipeline,
            args.device,
            args.end_to_end_jobs,
            fetch_delay_s=0.1,
            model_dir=model_dir,
        )
        report["end_to_end"] = overlap
        report["overlapped_vs_sequential"] = overlap["overlapped_vs_sequential"]
        report["targets_met"] = overlap["overlapped_vs_sequential"] >= OVERLAP_TARGET
    out = args.out or RESULTS / f"pipeline_gpu_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out}\n\nREADME table:\n{readme_table(report)}")
    return report


def readme_table(report: dict[str, Any]) -> str:
    """The README's table of a saved report (tests/unit/test_bench_tables.py keeps the two equal)."""
    batches = sorted({int(b) for figures in report["pipelines"].values() for b in figures["images_per_s"]})
    memory = "GPU memory" if report["device"].startswith("cuda") else "process memory"
    if any(figures.get("peak_memory_scope") != "pipeline" for figures in report["pipelines"].values()):
        memory += ", the run's so far"  # a report from before the peak was reset per pipeline
    rows = [
        f"| pipeline | {' | '.join(f'batch {b}' for b in batches)} | best / batch 1 | peak {memory} |",
        f"|---|{'---|' * len(batches)}---|---|",
    ]
    for name, figures in report["pipelines"].items():
        rates = " | ".join(f"{figures['images_per_s'].get(str(b), '-')}" for b in batches)
        rows.append(
            f"| `{name}` | {rates} | {figures['best_vs_batch_1']:.2f}x (batch {figures['best_batch']}) "
            f"| {figures['peak_memory_mb'] / 1024:.1f} GB |"
        )
    if "end_to_end" in report:
        end = report["end_to_end"]
        rows += [
            "",
            f"| end to end: `{end['pipeline']}`, {end['sequential']['jobs']} jobs, "
            f"{int(end['fetch_delay_s'] * 1000)} ms image downloads | jobs/s |",
            "|---|---|",
            f"| one job at a time (`SMARTSEG_WORKER_JOBS_AHEAD=0`) | {end['sequential']['jobs_per_s']} |",
            f"| {end['jobs_ahead']} jobs ahead | {end['overlapped']['jobs_per_s']} |",
            f"| ratio (target ≥ {OVERLAP_TARGET}) | **{end['overlapped_vs_sequential']:.2f}x** |",
        ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
