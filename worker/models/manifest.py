"""A model folder on disk and its manifest: hashing, writing and verifying, with no network at all.

A model folder is ``<model_dir>/<name>/`` holding what ``save_pretrained`` writes, plus ``manifest.json``:
``{"model": name, "files": {"relative/path": {"sha256": hex, "bytes": n}}}``. Workers only ever read
weights from such folders, verified at start, so a truncated or swapped file stops the worker with a
message naming it instead of failing somewhere inside transformers.

Hidden paths (a component starting with ``.``) are never part of a model: they are hub download metadata
(``.cache/``, ``.gitattributes``) and in-progress downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from smartseg.shared.errors import ModelWeightsError
from smartseg.worker.models.catalog import ModelSpec, model_spec

MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PARTIAL_SUFFIX = ".partial"
CHUNK_BYTES = 8 * 1024 * 1024
# A file modified this recently may change again within the same mtime tick, so its hash is not cached.
SETTLED_AFTER_NS = 2_000_000_000


@dataclass(frozen=True)
class ManifestEntry:
    sha256: str
    bytes: int


def known_specs(names: Iterable[str]) -> list[ModelSpec]:
    """The catalog entries for ``names``; an unknown name fails before anything is downloaded or read."""
    return [model_spec(name) for name in names]


# Hashing ------------------------------------------------------------------------------------------------

# (device, inode, size, mtime_ns) -> sha256 of files hashed in this process: a worker verifies its folders
# in prepare_models and again when loading them, and re-reading GBs for the same answer wastes seconds.
_hash_cache: dict[tuple[int, int, int, int], str] = {}


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of ``path``, read in chunks (weights are GBs)."""
    before = path.stat()
    cached = _hash_cache.get(_stat_key(before))
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    hex_digest = digest.hexdigest()
    settled = time.time_ns() - before.st_mtime_ns > SETTLED_AFTER_NS
    if settled and _stat_key(path.stat()) == _stat_key(before):
        _hash_cache[_stat_key(before)] = hex_digest
    return hex_digest


# Manifests ----------------------------------------------------------------------------------------------


def _safe_relative_path(relative: object, source: str) -> str:
    """``relative`` if it names a file strictly inside a model folder; manifests may come from a bucket we
    do not control, and a path like ``../../etc/cron.d/x`` must not make us write outside model_dir."""
    plain = (
        isinstance(relative, str)
        and relative != MANIFEST
        and not any(character in relative for character in "\\:\x00")  # Windows separators and drives
        # An empty part means absolute, empty or "a//b"; a leading dot covers "..", "." and hidden files.
        and all(part and not part.startswith(".") for part in relative.split("/"))
    )
    if not plain or not isinstance(relative, str):
        raise ModelWeightsError(
            f"{source}: file path {relative!r} is not a plain path inside the model folder"
        )
    return relative


def inside_folder(folder: Path, relative: str, source: str) -> Path:
    """``folder / relative``, refusing it if symlinks already in the folder would lead it outside."""
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ModelWeightsError(f"{source}: file path {relative!r} leads outside {folder}")
    return path


def parse_manifest(data: bytes, source: str, model: str) -> dict[str, ManifestEntry]:
    """The files a manifest lists, after checking its shape, its model name and every path in it."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelWeightsError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ModelWeightsError(f'{source}: expected {{"model": ..., "files": {{path: ...}}}}')
    if manifest.get("model") != model:
        raise ModelWeightsError(
            f"{source}: the manifest is for model {manifest.get('model')!r}, not {model!r}"
        )
    entries = {}
    for relative, entry in manifest["files"].items():
        _safe_relative_path(relative, source)
        sha256 = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not (
            isinstance(sha256, str)
            and len(sha256) == 64
            and set(sha256) <= set("0123456789abcdef")
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
        ):
            raise ModelWeightsError(f'{source}: entry for {relative!r} needs {{"sha256": hex, "bytes": n}}')
        entries[relative] = ManifestEntry(sha256, size)
    return entries


def model_files(folder: Path) -> list[str]:
    """Relative paths of the files that make up the model in ``folder`` (not hidden, not the manifest)."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        hidden = any(part.startswith(".") for part in relative.split("/"))
        if path.is_file() and not hidden and relative != MANIFEST:
            files.append(relative)
    return sorted(files)


def write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _manifest_bytes(model: str, entries: dict[str, ManifestEntry]) -> bytes:
    files = {path: {"sha256": entry.sha256, "bytes": entry.bytes} for path, entry in sorted(entries.items())}
    return (json.dumps({"model": model, "files": files}, indent=2) + "\n").encode()


def write_manifest(folder: Path) -> Path:
    """Hash every model file in ``folder`` into ``folder/manifest.json`` (replacing any); returns its path."""
    if not folder.is_dir():
        raise ModelWeightsError(f"model folder {folder} does not exist")
    entries = {
        relative: ManifestEntry(file_sha256(folder / relative), (folder / relative).stat().st_size)
        for relative in model_files(folder)
    }
    manifest_path = folder / MANIFEST
    write_atomically(manifest_path, _manifest_bytes(folder.name, entries))
    return manifest_path


# Verification -------------------------------------------------------------------------------------------


def _check_loadable(folder: Path) -> None:
    """The files transformers needs to exist at all: config.json, and every weights shard."""
    if not (folder / CONFIG).is_file():
        raise ModelWeightsError(f"{folder / CONFIG}: missing (every model folder needs it)")
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if not index.is_file():
            continue
        try:
            shards = set(json.loads(index.read_bytes())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelWeightsError(f"{index}: not a weights index ({exc!r})") from None
        for shard in sorted(shards):
            shard_path = inside_folder(folder, _safe_relative_path(shard, str(index)), str(index))
            if not shard_path.is_file():
                raise ModelWeightsError(f"{shard_path}: listed in {index} but missing")
    if not any(path.is_file() and path.suffix in WEIGHT_SUFFIXES for path in folder.iterdir()):
        raise ModelWeightsError(
            f"{folder}: no weights file (model.safetensors, model-*-of-*.safetensors or pytorch_model.bin)"
        )


def verify_model_folder(folder: Path) -> None:
    """Check ``folder`` against its manifest (sizes, then hashes), or without one that config.json and
    weights exist. Raises ModelWeightsError naming the file that is wrong."""
    if not folder.is_dir():
        raise ModelWeightsError(
            f"model folder {folder} does not exist (run `smartseg models fetch {folder.name}` on a machine "
            "with internet and copy the folder here, or set SMARTSEG_MODEL_URI to an S3 copy)"
        )
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        entries = parse_manifest(manifest_path.read_bytes(), str(manifest_path), folder.name)
        paths = {relative: inside_folder(folder, relative, str(manifest_path)) for relative in entries}
        # Sizes first: a truncated or missing file is reported without hashing GBs of the others.
        for relative, entry in entries.items():
            path = paths[relative]
            if not path.is_file():
                raise ModelWeightsError(f"{path}: listed in {manifest_path} but missing")
            size = path.stat().st_size
            if size != entry.bytes:
                raise ModelWeightsError(f"{path}: {size} bytes, but {manifest_path} says {entry.bytes}")
        for relative, entry in entries.items():
            digest = file_sha256(paths[relative])
            if digest != entry.sha256:
                raise ModelWeightsError(
                    f"{paths[relative]}: sha256 {digest} does not match {entry.sha256} in {manifest_path}"
                )
    _check_loadable(folder)
