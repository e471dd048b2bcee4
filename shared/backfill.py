"""``smartseg backfill MANIFEST.jsonl`` and ``Client.backfill``: a local manifest through the batches API,
with a progress line, and the results written to a local JSONL file as batches finish.

The manifest goes up in batches of up to 1,000 inline items, each under an Idempotency-Key made of the
file's hash and the chunk's number, and every item gets a ``key`` (its own, else the file's hash and its
line number): run it again after a Ctrl-C and it finds its batches, writes what is missing, and makes no
item twice. Lines that are not items are written to the results as invalid without being sent.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from smartseg.shared.errors import SmartsegAPIError
from smartseg.shared.schemas import MAX_INLINE_ITEMS, BatchItem, item_error

if TYPE_CHECKING:
    from smartseg.shared.client import Client

POLL_S = 1.0
ENDED = ("completed", "canceled", "failed")


@dataclass
class Chunk:
    number: int
    lines: dict[int, dict[str, Any]]  # manifest line index -> item
    batch_id: str | None = None
    written: bool = False


@dataclass
class Progress:
    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate else float("nan")
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        eta = f"{left:,.0f} s" if left == left else "?"  # NaN until the first item ends
        return (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} done, "
            f"{self.failed} failed, {rate:,.1f} items/s, ETA {eta}   "
        )


def backfill(
    api: Client, manifest: Path, output: Path, status: IO[str] = sys.stderr, poll_s: float = POLL_S
) -> int:
    """Submit, wait and write; returns 0 when every item succeeded, 1 when some did not."""
    digest = _file_hash(manifest)
    written = _written_indexes(output)
    chunks, invalid = _chunks(manifest, digest)
    total = sum(len(chunk.lines) for chunk in chunks) + len(invalid)
    progress = Progress(total=total, done=len(written))
    with output.open("a") as results:
        for index, error in invalid.items():
            if index not in written:
                _write(
                    results,
                    {"index": index, "key": None, "job_id": None, "status": "invalid", "error": error},
                )
                progress.done += 1
        progress.failed = len(invalid)
        for chunk in chunks:
            if all(index in written for index in chunk.lines):
                chunk.written = True
            else:
                chunk.batch_id = _submit(api, chunk, digest, results, progress)
        pending = [chunk for chunk in chunks if not chunk.written and chunk.batch_id]
        while pending:
            for chunk in pending:
                if api.get_batch(str(chunk.batch_id)).status in ENDED:
                    _write_results(api, chunk, written, results, progress)
            pending = [chunk for chunk in pending if not chunk.written]
            status.write(progress.line())
            status.flush()
            if pending:
                time.sleep(poll_s)
    status.write(progress.line() + "\n")
    return 1 if progress.failed else 0


def _chunks(manifest: Path, digest: str) -> tuple[list[Chunk], dict[int, dict[str, Any]]]:
    """The manifest's items in chunks of an API batch, and the lines that are not items (with why)."""
    chunks: list[Chunk] = []
    invalid: dict[int, dict[str, Any]] = {}
    current: dict[int, dict[str, Any]] = {}
    for index, line in _lines(manifest):
        try:
            item = BatchItem.model_validate_json(line)
        except ValidationError as exc:
            invalid[index] = item_error(exc)
            continue
        fields = item.model_dump(exclude_unset=True)
        fields.setdefault("key", f"{digest[:24]}:{index}")  # so a second run skips what the first did
        current[index] = fields
        if len(current) == MAX_INLINE_ITEMS:
            chunks.append(Chunk(len(chunks), current))
            current = {}
    if current:
        chunks.append(Chunk(len(chunks), current))
    return chunks, invalid


def _submit(api: Client, chunk: Chunk, digest: str, results: IO[str], progress: Progress) -> str | None:
    """The chunk's batch (an earlier run's, under the same Idempotency-Key); an item the API refuses is
    written as failed and the rest sent again."""
    for attempt in range(len(chunk.lines) + 1):
        try:
            return api.batch(
                list(chunk.lines.values()),
                idempotency_key=f"backfill-{digest[:32]}-{chunk.number}-{attempt}",
            ).id
        except SmartsegAPIError as exc:
            position = (exc.details or {}).get("item")
            if exc.status != 422 or not isinstance(position, int):
                raise
            error = {"code": exc.code, "message": exc.message, "details": exc.details}
        index = list(chunk.lines)[position]
        del chunk.lines[index]
        _write(results, {"index": index, "key": None, "job_id": None, "status": "invalid", "error": error})
        progress.done += 1
        progress.failed += 1
        if not chunk.lines:
            chunk.written = True
            return None
    return None


def _write_results(
    api: Client, chunk: Chunk, written: set[int], results: IO[str], progress: Progress
) -> None:
    indexes = list(chunk.lines)
    for line in api.batch_results(str(chunk.batch_id)):
        index = indexes[line["index"]]
        if index in written:
            continue
        _write(results, {**line, "index": index})
        written.add(index)
        progress.done += 1
        progress.failed += line.get("status") != "succeeded"
    chunk.written = True


def _lines(manifest: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their index among them (blank lines are no items)."""
    with manifest.open() as file:
        index = 0
        for line in file:
            if line.strip():
                yield index, line
                index += 1


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _written_indexes(output: Path) -> set[int]:
    if not output.exists():
        return set()
    with output.open() as file:
        return {json.loads(line)["index"] for line in file if line.strip()}


def _write(results: IO[str], line: dict[str, Any]) -> None:
    results.write(json.dumps(line, separators=(",", ":")) + "\n")
    results.flush()
