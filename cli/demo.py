"""``smartseg demo``: start the stack, run real jobs on a generated scene, print them and save the masks."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from smartseg.cli.launcher import Stack
from smartseg.shared.client import SmartsegClient
from smartseg.testing.image_server import serve_pngs
from smartseg.testing.scenes import demo_scene

OVERLAY_COLOURS = [(255, 0, 255), (0, 200, 255), (255, 140, 0), (0, 255, 120), (255, 255, 0)]
OVERLAY_ALPHA = 0.35
OUTSIDE_BRIGHTNESS = 0.3
JOB_TIMEOUT_S = 60


def demo_requests(image_url: str, data_url: str, left_kind: str) -> list[dict[str, Any]]:
    return [
        {"image_url": image_url, "prompt": "red shape", "region": "us-east"},
        {"image_url": image_url, "prompt": f"left {left_kind}", "region": "eu-west"},
        {"image_url": image_url, "prompts": ["largest shape", "second from left shape"]},
        {"image_url": data_url, "prompt": "blue shape", "region": "eu-west"},
        {"image_url": image_url, "prompt": "shoe"},
    ]


def overlay(image: Image.Image, masks: list[np.ndarray]) -> Image.Image:
    """The image dimmed outside the masks and each mask tinted, so what was selected stands out."""
    pixels = np.asarray(image.convert("RGB")).astype(np.float32)
    selected = np.logical_or.reduce(masks) if masks else np.zeros(pixels.shape[:2], dtype=bool)
    pixels[~selected] *= OUTSIDE_BRIGHTNESS
    for index, mask in enumerate(masks):
        colour = np.array(OVERLAY_COLOURS[index % len(OVERLAY_COLOURS)], dtype=np.float32)
        pixels[mask] = pixels[mask] * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA
    return Image.fromarray(pixels.astype(np.uint8))


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
    with serve_pngs({"scene.png": png}) as image_root, SmartsegClient(stack.api_url, api_key) as client:
        image_url = f"{image_root}/scene.png"
        submitted = [client.create(body) for body in demo_requests(image_url, data_url, left_kind)]
        for number, first in enumerate(submitted, start=1):
            job = client.wait(first["id"], timeout_s=JOB_TIMEOUT_S)
            print(f"\n=== job {number}: {job['input']['prompts']} in {job['region']} -> {job['status']}")
            print(json.dumps(job, indent=2))
            all_ok &= job["status"] == "succeeded"
            masks = []
            for output in job["outputs"]:
                mask_png = httpx.get(output["url"], timeout=10).raise_for_status().content
                (out_dir / f"job{number}-{output['filename']}").write_bytes(mask_png)
                masks.append(np.asarray(Image.open(io.BytesIO(mask_png))) > 0)
            overlay(scene.image, masks).save(out_dir / f"job{number}-overlay.png")
    print(f"\nmasks and overlays written to {out_dir}/")
    return all_ok
