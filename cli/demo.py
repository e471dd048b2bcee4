"""``smartseg demo``: start the stack, run real jobs on a generated scene through the Python SDK, print
them and save their masks and overlays."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from smartseg.cli.launcher import Stack
from smartseg.shared.client import Client
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import demo_scene

JOB_TIMEOUT_S = 60


def demo_requests(image_url: str, data_url: str, left_kind: str) -> list[dict[str, Any]]:
    """``Client.submit`` arguments: a served URL and a data URL, one prompt or several, pinned regions."""
    return [
        {"image": image_url, "prompt": "red shape", "region": "us-east"},
        {"image": image_url, "prompt": f"left {left_kind}", "region": "eu-west"},
        {"image": image_url, "prompts": ["largest shape", "second from left shape"]},
        {"image": data_url, "prompt": "blue shape", "region": "eu-west"},
        {"image": image_url, "prompt": "shoe"},
    ]


def run_demo(stack: Stack, api_key: str, out_dir: Path) -> bool:
    """Submit the demo jobs, print each, save masks and overlays; True when every job succeeded."""
    scene = demo_scene()
    buffer = io.BytesIO()
    scene.image.save(buffer, format="PNG")
    png = buffer.getvalue()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    kinds = [shape.kind for shape in scene.shapes]
    left_kind = max(set(kinds), key=kinds.count)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene.image.save(out_dir / "scene.png")
    all_ok = True
    with serve_pngs({"scene.png": png}) as image_root, Client(stack.api_url, api_key) as client:
        image_url = f"{image_root}/scene.png"
        submitted = [client.submit(**request) for request in demo_requests(image_url, data_url, left_kind)]
        for number, first in enumerate(submitted, start=1):
            job = client.wait(first.id, timeout_s=JOB_TIMEOUT_S)
            print(f"\n=== job {number}: {job.job.input.prompts} in {job.job.region} -> {job.status}")
            print(json.dumps(job.job.model_dump(mode="json"), indent=2))
            all_ok &= job.status == "succeeded"
            for mask in job.masks:
                (out_dir / f"job{number}-{mask.filename}").write_bytes(mask.data)
            job.overlay(scene.image).save(out_dir / f"job{number}-overlay.png")
    print(f"\nmasks and overlays written to {out_dir}/")
    return all_ok
