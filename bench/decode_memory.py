"""Peak worker memory for one job on a large image: the pipeline at full resolution (as before issue 10)
against the working size it now sees (SMARTSEG_DECODE_MAX_SIDE, default 2048), in one run.

Each case runs the worker's own code (JobRunner: fetch from a data: URL, decode, the `lite` pipeline, masks
encoded at full size and stored) in a fresh process. The figure is the rise of its peak resident memory
(VmHWM, reset after start-up) over its memory before the job. Cases:
- png-40mp: a 7744x5163 PNG of a few flat shapes (small on disk, 40 MP when decoded), PNG masks;
- jpeg-40mp: the same scene as a JPEG, PNG masks;
- jpeg-40mp-cutout, png-40mp-cutout: cutout output, which needs the image's own pixels at full size;
- jpeg-header-36mp: a 160x120 JPEG whose header claims 6000x6000 (now refused as image_invalid).
Prints a table and saves bench/results/decode_memory.json with the ratios working/full per case.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from smartseg.testing.scenes import generate_scene, scene_prompts

RESULTS = Path(__file__).resolve().parent / "results" / "decode_memory.json"
LARGE = (7744, 5163)  # 40 MP, the default SMARTSEG_MAX_IMAGE_PIXELS
FULL_SIDE = 100_000  # larger than any allowed image: the pipeline sees every pixel, as before
WORKING_SIDE = 2048  # the SMARTSEG_DECODE_MAX_SIDE default
SCENE_SEED = 3


def scene_bytes(fmt: str) -> tuple[bytes, str]:
    scene = generate_scene(SCENE_SEED, 640, 480)
    image = scene.image.resize(LARGE, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    prompt = next(case.prompt for case in scene_prompts(scene) if case.expected is not None)
    return buffer.getvalue(), prompt


def header_claims_36mp() -> bytes:
    small = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(120, 160, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    struct.pack_into(">HH", data, data.index(b"\xff\xc0") + 5, 6000, 6000)
    return bytes(data)


def cases() -> dict[str, dict[str, Any]]:
    png, prompt = scene_bytes("PNG")
    jpeg, _ = scene_bytes("JPEG")
    return {
        "png-40mp": {"data": png, "mime": "image/png", "prompt": prompt, "format": "png"},
        "jpeg-40mp": {"data": jpeg, "mime": "image/jpeg", "prompt": prompt, "format": "png"},
        "jpeg-40mp-cutout": {"data": jpeg, "mime": "image/jpeg", "prompt": prompt, "format": "cutout"},
        "png-40mp-cutout": {"data": png, "mime": "image/png", "prompt": prompt, "format": "cutout"},
        "jpeg-header-36mp": {
            "data": header_claims_36mp(),
            "mime": "image/jpeg",
            "prompt": prompt,
            "format": "png",
        },
    }


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(data_path: str, mime: str, prompt: str, output_format: str, max_side: int) -> None:
    """One job through JobRunner, in this fresh process; prints its peak memory rise as JSON."""
    import fakeredis

    from smartseg.shared.fetch import FetchLimits, ImageFetcher
    from smartseg.shared.jobspec import JobOptions, JobSpec
    from smartseg.shared.jobstore import JobStore
    from smartseg.shared.keys import Keys
    from smartseg.worker.pipeline.lite import build_lite_pipeline
    from smartseg.worker.runner import JobRunner

    class SizeOnlyStorage:
        def __init__(self) -> None:
            self.bytes = 0

        def put(self, key: str, data: bytes, content_type: str) -> None:
            self.bytes += len(data)

        def delete(self, key: str) -> None:
            pass

    data = Path(data_path).read_bytes()
    url = f"data:{mime};base64," + base64.b64encode(data).decode()
    store = JobStore(fakeredis.FakeRedis(decode_responses=True), Keys("bench"), 3600, 120_000)
    pipeline = build_lite_pipeline()
    pipeline.warm_up()
    spec = JobSpec(
        image_url=url, prompts=(prompt,), pipeline="lite", options=JobOptions(output_format=output_format)
    )
    job = store.create(owner="o", spec=spec, region="r", filename_stem="bench")[0]
    storage = SizeOnlyStorage()
    runner = JobRunner(
        store,
        storage,
        ImageFetcher(FetchLimits(max_bytes=len(url))),
        {"lite": pipeline},
        "w",
        600.0,  # type: ignore[arg-type]
        40_000_000,
        max_side,
    )
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = memory_kb("VmRSS")
    outcome = runner.run(job.id, job.token, "lite")
    record = store.get(job.id)
    print(
        json.dumps(
            {
                "outcome": outcome,
                "error": (record.error or {}).get("code"),
                "masks": len(record.outputs),
                "size": [record.outputs[0]["width"], record.outputs[0]["height"]] if record.outputs else None,
                "peak_rise_mb": round((memory_kb("VmHWM") - before) / 1024, 1),
                "decode_s": record.metrics.get("decode_s"),
                "inference_s": record.metrics.get("inference_s"),
                "upload_s": record.metrics.get("upload_s"),
            }
        )
    )


def measure(path: Path, case: dict[str, Any], max_side: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(path), case["mime"], case["prompt"], case["format"]]
    done = subprocess.run([*command, str(max_side)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", nargs=5, metavar=("DATA", "MIME", "PROMPT", "FORMAT", "MAX_SIDE"))
    args = parser.parse_args()
    if args.child:
        data_path, mime, prompt, output_format, max_side = args.child
        child(data_path, mime, prompt, output_format, int(max_side))
        return
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, case in cases().items():
            path = Path(folder) / name
            path.write_bytes(case["data"])
            full = measure(path, case, FULL_SIDE)
            working = measure(path, case, WORKING_SIDE)
            results[name] = {
                "input_kb": round(len(case["data"]) / 1024, 1),
                "full_resolution": full,
                "working_size": working,
                "peak_working_vs_full": round(working["peak_rise_mb"] / max(full["peak_rise_mb"], 0.1), 3),
            }
            print(
                f"{name:18} {results[name]['input_kb']:>8} KB   full: {full['peak_rise_mb']:>7} MB "
                f"{full['outcome']:9} working ({WORKING_SIDE}): {working['peak_rise_mb']:>7} MB "
                f"{working['outcome']:9} {working['error'] or ''}  "
                f"ratio {results[name]['peak_working_vs_full']}"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"working_side": WORKING_SIDE, "cases": results}, indent=2) + "\n")
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
