"""Model weights on disk: manifests, verification, and copies from an S3 prefix or the Hugging Face hub.

A model folder is ``<model_dir>/<name>/`` holding what ``save_pretrained`` writes, plus ``manifest.json``:
``{"model": name, "files": {"relative/path": {"sha256": hex, "bytes": n}}}``. Workers only ever read
weights from such folders; ``prepare_models`` fills them from ``SMARTSEG_MODEL_URI`` (an S3 copy made with
``smartseg models push``) and verifies them at start, so a truncated or swapped file stops the worker with
a message naming it instead of failing somewhere inside transformers.

Hidden paths (a component starting with ``.``) are never part of a model: they are hub download metadata
(``.cache/``, ``.gitattributes``) and our own in-progress downloads.

boto3 and huggingface_hub are imported inside the functions that need them: ``worker.models`` imports this
module to verify folders and must stay free of boto3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.models.catalog import MODELS, ModelSpec, model_spec

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PARTIAL_SUFFIX = ".partial"
FETCH_STAGING = ".fetching"  # under model_dir: hub downloads in progress, renamed into place when complete
CHUNK_BYTES = 8 * 1024 * 1024
HUB_TIMEOUT_S = 10.0
FOREIGN_WEIGHT_PATTERNS = ("*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.pt", "*.pth", "*.ckpt")
# A file modified this recently may change again within the same mtime tick, so its hash is not cached.
SETTLED_AFTER_NS = 2_000_000_000


class ModelWeightsError(RuntimeError):
    """A model folder, manifest or copy is missing, incomplete, corrupt or unsafe; the message names it."""


@dataclass(frozen=True)
class ManifestEntry:
    sha256: str
    bytes: int


def known_specs(names: Iterable[str]) -> list[ModelSpec]:
    """The catalog entries for ``names``; an unknown name fails before anything is downloaded or read."""
    specs = []
    for name in names:
        try:
            specs.append(model_spec(name))
        except KeyError:
            raise ModelWeightsError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
    return specs


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


def _inside(folder: Path, relative: str, source: str) -> Path:
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


def _model_files(folder: Path) -> list[str]:
    """Relative paths of the files that make up the model in ``folder`` (not hidden, not the manifest)."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        hidden = any(part.startswith(".") for part in relative.split("/"))
        if path.is_file() and not hidden and relative != MANIFEST:
            files.append(relative)
    return sorted(files)


def _write_atomically(path: Path, data: bytes) -> None:
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
        for relative in _model_files(folder)
    }
    manifest_path = folder / MANIFEST
    _write_atomically(manifest_path, _manifest_bytes(folder.name, entries))
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
            shard_path = _inside(folder, _safe_relative_path(shard, str(index)), str(index))
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
        paths = {relative: _inside(folder, relative, str(manifest_path)) for relative in entries}
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


# S3 -----------------------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` as (bucket, prefix without surrounding slashes)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ModelWeightsError(f"{uri!r} is not an s3://bucket/prefix URI")
    return bucket, prefix.strip("/")


def _key(prefix: str, *parts: str) -> str:
    return "/".join(part for part in (prefix, *parts) if part)


def _download(client: Any, bucket: str, key: str, target: Path, entry: ManifestEntry) -> None:
    """Stream ``key`` into a hidden temp file next to ``target``, hashing as it goes, and rename it into
    place only once size and hash match: an interrupted download never leaves a complete-looking file."""
    source = f"s3://{bucket}/{key}"
    response = client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    if response.get("ContentLength") not in (None, entry.bytes):
        body.close()
        raise ModelWeightsError(
            f"{source}: {response['ContentLength']} bytes, but its manifest says {entry.bytes} (for {target})"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=PARTIAL_SUFFIX
    )
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(descriptor, "wb") as file:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())  # the rename must not land on disk before the data does
        if (size, digest.hexdigest()) != (entry.bytes, entry.sha256):
            raise ModelWeightsError(
                f"{source}: downloaded {size} bytes with sha256 {digest.hexdigest()}, but its manifest says "
                f"{entry.bytes} bytes with sha256 {entry.sha256} (nothing written to {target})"
            )
        os.replace(temporary, target)
    finally:
        body.close()
        Path(temporary).unlink(missing_ok=True)


def _is_current(path: Path, entry: ManifestEntry) -> bool:
    return path.is_file() and path.stat().st_size == entry.bytes and file_sha256(path) == entry.sha256


def _sync_one(client: Any, bucket: str, prefix: str, model_dir: Path, name: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    manifest_uri = f"s3://{bucket}/{_key(prefix, name, MANIFEST)}"
    try:
        data = client.get_object(Bucket=bucket, Key=_key(prefix, name, MANIFEST))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ModelWeightsError(
                f"{manifest_uri} not found: upload the model with "
                f"`smartseg models push {name} --uri s3://{bucket}/{prefix}`"
            ) from None
        raise ModelWeightsError(f"cannot read {manifest_uri}: {exc}") from exc
    except BotoCoreError as exc:
        raise ModelWeightsError(f"cannot read {manifest_uri}: {exc}") from exc
    entries = parse_manifest(data, manifest_uri, name)

    folder = model_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.rglob(f".*{PARTIAL_SUFFIX}"):  # from a download that was killed
        leftover.unlink()
    # The new manifest goes in first: if we stop halfway, verification names the files still missing.
    _write_atomically(folder / MANIFEST, data)
    for relative, entry in entries.items():
        target = _inside(folder, relative, manifest_uri)
        if _is_current(target, entry):
            continue
        key = _key(prefix, name, relative)
        log.info("downloading s3://%s/%s (%d bytes) to %s", bucket, key, entry.bytes, target)
        try:
            _download(client, bucket, key, target, entry)
        except (BotoCoreError, ClientError) as exc:
            raise ModelWeightsError(f"cannot download s3://{bucket}/{key} to {target}: {exc}") from exc
    # The folder mirrors the prefix: a stale file (say model.safetensors beside a newer sharded copy)
    # could be what transformers picks up.
    for relative in _model_files(folder):
        if relative not in entries:
            log.warning("removing %s: not in %s", folder / relative, manifest_uri)
            (folder / relative).unlink()
    verify_model_folder(folder)


def sync_from_s3(uri: str, model_dir: Path, names: list[str], client: Any) -> None:
    """Make ``<model_dir>/<name>/`` a verified copy of ``<uri>/<name>/`` for each name, downloading only
    the files that are missing or differ from ``<uri>/<name>/manifest.json``."""
    known_specs(names)
    bucket, prefix = parse_s3_uri(uri)
    for name in names:
        _sync_one(client, bucket, prefix, model_dir, name)


def push_to_s3(folder: Path, uri: str, client: Any) -> None:
    """Upload a verified model folder to ``<uri>/<folder name>/``, writing its manifest first if it has none.

    The manifest goes up last, so a sync never sees a manifest whose files are not all there yet."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    if folder.is_dir() and not (folder / MANIFEST).is_file():
        write_manifest(folder)
    verify_model_folder(folder)
    entries = parse_manifest((folder / MANIFEST).read_bytes(), str(folder / MANIFEST), folder.name)
    for relative in [*entries, MANIFEST]:
        key = _key(prefix, folder.name, relative)
        try:
            client.upload_file(str(folder / relative), bucket, key)
        except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
            raise ModelWeightsError(
                f"cannot upload {folder / relative} to s3://{bucket}/{key}: {exc}"
            ) from exc


# Hugging Face hub ---------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:300]}"


def hub_unreachable_message(spec: ModelSpec, hub: str, model_dir: Path, exc: BaseException) -> str:
    return (
        f"cannot get {spec.name} ({spec.hub_repo}) from the Hugging Face hub at {hub} ({_one_line(exc)}). "
        f"Without hub access, run `smartseg models fetch {spec.name}` on a machine that has it, then either "
        f"copy the folder {spec.name}/ into SMARTSEG_MODEL_DIR here ({model_dir}) or run "
        f"`smartseg models push {spec.name} --uri s3://BUCKET/PREFIX` there and set "
        "SMARTSEG_MODEL_URI=s3://BUCKET/PREFIX for the workers"
    )


def hub_ignore_patterns(repo_files: list[str]) -> list[str]:
    """Files of a hub repo that transformers never loads here: other frameworks' weights, the original
    checkpoints, and pytorch_model.bin when safetensors exist (sam-vit-huge ships 2.5 GB three times over)."""
    patterns = list(FOREIGN_WEIGHT_PATTERNS)
    if any(name.endswith(".safetensors") for name in repo_files):
        patterns += ["*.bin", "*.bin.index.json"]
    return patterns


def fetch_from_hub(names: list[str], model_dir: Path, *, timeout_s: float = HUB_TIMEOUT_S) -> None:
    """Download each model's hub repo into ``<model_dir>/<name>/`` and write its manifest.

    Files land in ``<model_dir>/.fetching/<name>/`` (an existing folder is moved there first, so only what
    changed is downloaded) and the folder is renamed into place once complete and verified: an interrupted
    fetch leaves no half folder, and running it again resumes.
    """
    specs = known_specs(names)
    from huggingface_hub import HfApi, snapshot_download  # ships with transformers; only operators need it
    from huggingface_hub.utils import filter_repo_objects

    # huggingface_hub reads HF_ENDPOINT once, at import; read it now so the current environment decides.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    hub = endpoint or "https://huggingface.co"
    api = HfApi(endpoint=endpoint)
    for spec in specs:
        # One short, explicit request first: offline it fails within timeout_s (connection refused or DNS
        # failure: at once), where snapshot_download would quietly return whatever an earlier attempt
        # left in local_dir. It also pins the commit and lists the files to expect.
        try:
            info = api.model_info(spec.hub_repo, timeout=timeout_s)
        except Exception as exc:  # connection refused, DNS, timeout, HF_HUB_OFFLINE, HTTP errors alike
            raise ModelWeightsError(hub_unreachable_message(spec, hub, model_dir, exc)) from exc
        repo_files = [sibling.rfilename for sibling in info.siblings or []]
        ignore_patterns = hub_ignore_patterns(repo_files)
        expected = set(filter_repo_objects(repo_files, ignore_patterns=ignore_patterns))

        final, staging = model_dir / spec.name, model_dir / FETCH_STAGING / spec.name
        staging.parent.mkdir(parents=True, exist_ok=True)
        if final.is_dir() and not staging.exists():
            final.rename(staging)
        try:
            snapshot_download(
                repo_id=spec.hub_repo,
                revision=info.sha,
                local_dir=staging,
                ignore_patterns=ignore_patterns,
                endpoint=endpoint,
                etag_timeout=timeout_s,
            )
        except Exception as exc:
            raise ModelWeightsError(
                f"downloading {spec.hub_repo} into {staging} failed ({_one_line(exc)}); "
                f"run `smartseg models fetch {spec.name}` again to resume"
            ) from exc
        missing = sorted(name for name in expected if not (staging / name).is_file())
        if missing:
            raise ModelWeightsError(
                f"{staging / missing[0]}: in {spec.hub_repo} but not downloaded ({len(missing)} files "
                f"missing); run `smartseg models fetch {spec.name}` again"
            )
        if expected:  # files an earlier version of the repo had must not outlive it
            for relative in _model_files(staging):
                if relative not in expected:
                    (staging / relative).unlink()
        write_manifest(staging)
        verify_model_folder(staging)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)


# Worker start -------------------------------------------------------------------------------------------


def prepare_models(settings: Settings, names: list[str]) -> dict[str, Path]:
    """What a worker calls at start: copy the models from ``SMARTSEG_MODEL_URI`` if set, verify every
    folder, and return name -> folder. Raises ModelWeightsError naming the first problem."""
    known_specs(names)
    model_dir = Path(settings.model_dir)
    if settings.model_uri:
        from shared.storage import s3_client

        client = s3_client(settings, settings.require_s3_endpoint())
        sync_from_s3(settings.model_uri, model_dir, names, client)  # verifies each folder it fills
    else:
        for name in names:
            verify_model_folder(model_dir / name)
    return {name: model_dir / name for name in names}
