"""The README's bench tables are the saved results, rendered by the bench that saved them: a rerun that
changes the figures fails here until the README shows them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench import failover, pipeline_gpu, scale

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("results", "render"),
    [
        ("failover.json", failover.readme_table),
        ("scale.json", scale.readme_table),
        ("pipeline_gpu_cpu.json", pipeline_gpu.readme_table),
    ],
)
def test_the_readme_shows_the_saved_figures(results: str, render: Callable[[dict[str, Any]], str]) -> None:
    report = json.loads((ROOT / "bench" / "results" / results).read_text())
    assert render(report) in (ROOT / "README.md").read_text()


def test_the_scale_results_hold_the_figures_the_issue_names() -> None:
    report = json.loads((ROOT / "bench" / "results" / "scale.json").read_text())
    assert {"messages_per_moved_job", "lost", "completed_twice"} <= report.keys()
    assert report["region_failover"]["jobs"] >= 20_000  # measured at the depth the README states
