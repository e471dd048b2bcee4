"""bench/pipeline_gpu.py runs end to end on the tiny models (as it will on a GPU with the published ones):
every pipeline at every batch size, and the report it saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import pipeline_gpu

pytestmark = pytest.mark.integration


def test_the_gpu_bench_runs_its_batch_sweep_and_saves_its_report(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    report = pipeline_gpu.main(
        ["--size", "tiny", "--model-dir", str(tiny_model_dir), "--batches", "1,2", "--rounds", "1",
         "--compare-dtypes", "float32,float32", "--end-to-end-jobs", "0", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == report
    assert set(report["pipelines"]) == {"grounded-sam", "grounded-sam2", "sam3"}
    for figures in report["pipelines"].values():
        assert set(figures["images_per_s"]) == {"1", "2"} and all(
            v > 0 for v in figures["images_per_s"].values()
        )
        assert figures["best_batch"] in (1, 2) and figures["peak_memory_mb"] > 0
        # bf16 needs CUDA; float32 against itself shows the comparison's plumbing: the same masks.
        agreement = figures["dtype_agreement"]
        assert agreement["masks_compared"] > 0 and agreement["min_iou"] == agreement["mean_iou"] == 1.0
