"""A small per-worker LRU of what models computed from an image, keyed by a hash of the image's pixels.

The image encoder is most of a SAM call: a second job on the same image (another prompt, a retry, a
batch over prompts) reuses the embedding instead of encoding again. The detector keeps its raw detections
per image and caption the same way.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch


def image_key(image: np.ndarray) -> str:
    """Same pixels, same key: decoded RGB bytes plus shape, so a re-encoded copy of an image still hits."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
    digest.update(repr(image.shape).encode())
    return digest.hexdigest()


class ImageCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: str, entry: Any) -> None:
        if self.capacity < 1:
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def split(self, keys: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
        """For a batch: the entries already kept, by key, and each key to compute with the index of its
        first occurrence in ``keys`` (an image twice in a batch is computed once)."""
        found: dict[str, Any] = {}
        missing: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key in found or key in missing:
                continue
            entry = self.get(key)
            if entry is None:
                missing[key] = index
            else:
                found[key] = entry
        return found, missing

    def __len__(self) -> int:
        return len(self._entries)


def batch_row(batch: torch.Tensor, row: int) -> torch.Tensor:
    """Row ``row`` of a batched output, kept on its own: a view would keep the whole batch alive for as
    long as the cache holds it."""
    return batch[row : row + 1].clone() if batch.shape[0] > 1 else batch
