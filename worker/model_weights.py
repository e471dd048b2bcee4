"""Getting model folders filled: copies from an S3 prefix (``smartseg models push`` / ``SMARTSEG_MODEL_URI``)
and from the Hugging Face hub (``smartseg models fetch``), each verified against its manifest
(``smartseg.worker.models.manifest``) before it is used.

boto3 and huggingface_hub are imported inside the functions that need them: a worker that copies nothing
never loads them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smartseg.worker.models.catalog import ModelSpec
from smartseg.worker.models.manifest import (
    CHUNK_BYTES,
    MANIFEST,
    PARTIAL_SUFFIX,
    ManifestEntry,
    ModelWeightsError,
    file_sha256,
    inside_folder,
    known_specs,
    model_files,
    parse_manifest,
    verify_model_folder,
    write_atomically,
    write_manifest,
)

if TYPE_CHECKING:
    from smartseg.shared.settings import Settings

log = logging.getLogger(__name__)

FETCH_STAGING = ".fetching"  # under model_dir: hub downloads in progress, renamed into place when complete
HUB_TIMEOUT_S = 10.0
FOREIGN_WEIGHT_PATTERNS = ("*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.pt", "*.pth", "*.ckpt")


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
    write_atomically(folder / MANIFEST, data)
    for relative, entry in entries.items():
        target = inside_folder(folder, relative, manifest_uri)
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
    for relative in model_files(folder):
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
            for relative in model_files(staging):
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
        from smartseg.shared.storage import s3_client

        client = s3_client(settings, settings.require_s3_endpoint())
        sync_from_s3(settings.model_uri, model_dir, names, client)  # verifies each folder it fills
    else:
        for name in names:
            verify_model_folder(model_dir / name)
    return {name: model_dir / name for name in names}
