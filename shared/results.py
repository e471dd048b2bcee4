"""What the Python SDK returns for a job: its masks as numpy arrays and PIL images, decoded from any format.

Mask files are downloaded from ``outputs[].url`` the first time a mask's pixels are asked for, once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from smartseg.shared.jobstore import JobStatus
from smartseg.shared.mask_encoding import decode_rle, rasterize_polygons
from smartseg.shared.schemas import Job, MaskOutput

__all__ = ["Mask", "Segmentation", "overlay"]

OVERLAY_COLOURS = [(255, 0, 255), (0, 200, 255), (255, 140, 0), (0, 255, 120), (255, 255, 0)]
OVERLAY_ALPHA = 0.35
OUTSIDE_BRIGHTNESS = 0.3

Downloader = Callable[[str], bytes]


def overlay(image: Image.Image, masks: Sequence[np.ndarray]) -> Image.Image:
    """The image dimmed outside the masks and each mask tinted in its own colour."""
    pixels = np.asarray(image.convert("RGB")).astype(np.float32)
    selected = np.logical_or.reduce(masks) if len(masks) else np.zeros(pixels.shape[:2], dtype=bool)
    pixels[~selected] *= OUTSIDE_BRIGHTNESS
    for index, mask in enumerate(masks):
        colour = np.array(OVERLAY_COLOURS[index % len(OVERLAY_COLOURS)], dtype=np.float32)
        pixels[mask] = pixels[mask] * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA
    return Image.fromarray(pixels.astype(np.uint8))


def decode_mask(data: bytes, filename: str) -> tuple[np.ndarray, Image.Image | None]:
    """A stored mask file as a bool HxW array, plus the RGBA picture for a cutout.

    The format is in the file name the worker gave it (``.png``, ``.rle.json``, ``.polygon.json``,
    ``.cutout.png``).
    """
    if filename.endswith(".rle.json"):
        return decode_rle(json.loads(data)), None
    if filename.endswith(".polygon.json"):
        return rasterize_polygons(json.loads(data)), None
    picture = Image.open(io.BytesIO(data))
    picture.load()
    if filename.endswith(".cutout.png"):
        cutout = picture.convert("RGBA")
        return np.asarray(cutout)[..., 3] > 0, cutout
    return np.asarray(picture.convert("L")) > 0, None


@dataclass
class Mask:
    """One output of a job: what the API says about it, and its pixels on first use.

    >>> mask = result.masks[0]
    >>> mask.label, mask.score, mask.box       # ('red ball', 0.97, (32, 40, 160, 168))
    >>> mask.array.sum() == mask.area          # bool HxW numpy array
    >>> mask.image.save("ball.png")            # PIL image, 0/255
    """

    output: MaskOutput
    _download: Downloader = field(repr=False)
    _data: bytes | None = field(default=None, repr=False)
    _array: np.ndarray | None = field(default=None, repr=False)
    _cutout: Image.Image | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.output.label

    @property
    def prompt(self) -> str:
        return self.output.prompt

    @property
    def score(self) -> float:
        return self.output.score

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in pixels, x1/y1 exclusive."""
        x0, y0, x1, y1 = self.output.box
        return x0, y0, x1, y1

    @property
    def area(self) -> int:
        return self.output.area

    @property
    def filename(self) -> str:
        return self.output.filename

    @property
    def data(self) -> bytes:
        """The stored file as the worker wrote it (PNG, RLE JSON, polygon JSON or RGBA cutout)."""
        if self._data is None:
            self._data = self._download(self.output.url)
        return self._data

    @property
    def array(self) -> np.ndarray:
        """Bool HxW, True on the object, at the image's size."""
        if self._array is None:
            self._array, self._cutout = decode_mask(self.data, self.output.filename)
        return self._array

    @property
    def image(self) -> Image.Image:
        """The mask as a PIL "L" image (0 or 255)."""
        return Image.fromarray(self.array.astype(np.uint8) * 255)

    @property
    def cutout(self) -> Image.Image | None:
        """The RGBA cutout when the job asked for ``output_format="cutout"``, else None."""
        self.array  # noqa: B018 - decodes the file, which fills in the cutout
        return self._cutout

    def save(self, directory: str | Path) -> Path:
        """Write the stored file into ``directory`` under its own name; returns its path."""
        path = Path(directory) / Path(self.output.filename).name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return path


@dataclass
class Segmentation:
    """A job and its masks.

    >>> result = client.segment("photo.jpg", "red ball")
    >>> result.status, result.result           # ('succeeded', 'match')
    >>> [mask.label for mask in result.masks]  # ['red ball']
    >>> result.overlay().save("overlay.png")   # the image with each mask tinted
    >>> result.save("out/")                    # mask files plus <job id>.overlay.png
    """

    job: Job
    masks: list[Mask]
    source: Callable[[], Image.Image | None] = field(default=lambda: None, repr=False)

    @classmethod
    def from_body(
        cls,
        body: dict[str, Any],
        download: Downloader,
        source: Callable[[], Image.Image | None] = lambda: None,
    ) -> Segmentation:
        job = Job.model_validate(body)
        return cls(job, [Mask(output, download) for output in job.outputs], source)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def status(self) -> str:
        """queued, running, succeeded, failed or canceled."""
        return self.job.status

    @property
    def done(self) -> bool:
        return JobStatus(self.job.status).is_terminal()

    @property
    def result(self) -> str | None:
        """``match`` or ``no_match`` once succeeded; None before or on failure."""
        return self.job.result

    @property
    def error(self) -> str | None:
        """``code: message`` of a failed job."""
        return f"{self.job.error.code}: {self.job.error.message}" if self.job.error else None

    def arrays(self) -> list[np.ndarray]:
        return [mask.array for mask in self.masks]

    def overlay(self, image: Image.Image | None = None) -> Image.Image:
        """The source image dimmed outside the masks, each mask in its own colour.

        ``image`` defaults to the one the job was submitted with, when the SDK has it (a local file,
        bytes, an array or a PIL image passed to ``segment``; a URL is downloaded).
        """
        base = image or self.source()
        if base is None:
            raise ValueError("no source image for this job: pass overlay(image)")
        return overlay(base, self.arrays())

    def save(self, directory: str | Path, *, with_overlay: bool = True) -> list[Path]:
        """Write every mask file, and ``<job id>.overlay.png`` when the source image is known.

        Returns the paths written."""
        folder = Path(directory)
        paths = [mask.save(folder) for mask in self.masks]
        if with_overlay and self.source() is not None:
            path = folder / f"{self.job.id}.overlay.png"
            folder.mkdir(parents=True, exist_ok=True)
            self.overlay().save(path)
            paths.append(path)
        return paths
