"""Model folders through a real S3 server (SeaweedFS): push, sync into an empty dir, incremental sync,
a corrupt object, a missing manifest, and prepare_models from SMARTSEG_MODEL_URI."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from smartseg.cli.commands import main
from smartseg.shared.settings import Settings
from smartseg.shared.storage import s3_client
from smartseg.worker.model_weights import prepare_models, push_to_s3, sync_from_s3
from smartseg.worker.models.manifest import ModelWeightsError, verify_model_folder

pytestmark = pytest.mark.integration

NAME = "sam-vit-base"
FILES = {
    "config.json": b'{"model_type": "sam"}',
    "model.safetensors": os.urandom(8192),  # never parsed here: any bytes will do
    "tokenizer/vocab.txt": b"a\nb\n",
}


class CountingClient:
    """A boto3 client that records the key of every GET."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.gets: list[str] = []

    def get_object(self, **kwargs: Any) -> Any:
        self.gets.append(kwargs["Key"])
        return self.client.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture(scope="module")
def client(service_settings: Settings) -> Any:
    client = s3_client(service_settings, service_settings.require_s3_endpoint())
    try:
        client.head_bucket(Bucket=service_settings.s3_bucket)
    except ClientError:
        client.create_bucket(Bucket=service_settings.s3_bucket)
    return client


@pytest.fixture
def uri(service_settings: Settings) -> str:
    return f"s3://{service_settings.s3_bucket}/models-test-{secrets.token_hex(4)}"


@pytest.fixture
def pushed(tmp_path: Path, uri: str, client: Any) -> Path:
    """A small fake model folder, pushed to ``uri``; returns the local source folder."""
    folder = tmp_path / "source" / NAME
    for relative, data in FILES.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    push_to_s3(folder, uri, client)
    return folder


def key_of(uri: str, relative: str) -> str:
    return f"{uri.split('/', 3)[3]}/{NAME}/{relative}"


def test_push_writes_the_manifest_and_a_sync_reproduces_the_folder(
    pushed: Path, uri: str, client: Any, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    sync_from_s3(uri, model_dir, [NAME], client)
    folder = model_dir / NAME
    verify_model_folder(folder)
    for relative, data in FILES.items():
        assert (folder / relative).read_bytes() == data
    assert (folder / "manifest.json").read_bytes() == (pushed / "manifest.json").read_bytes()
    assert not [path for path in folder.rglob(".*")]  # no temp files left behind


def test_a_second_sync_downloads_only_what_is_missing_or_different(
    pushed: Path, uri: str, client: Any, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    sync_from_s3(uri, model_dir, [NAME], client)
    folder = model_dir / NAME
    (folder / "config.json").write_bytes(b'{"model_type": "changed locally"}')
    (folder / "tokenizer/vocab.txt").unlink()
    (folder / "stale.bin").write_bytes(b"from an older version")

    counting = CountingClient(client)
    sync_from_s3(uri, model_dir, [NAME], counting)
    assert sorted(counting.gets) == sorted(
        key_of(uri, relative) for relative in ("manifest.json", "config.json", "tokenizer/vocab.txt")
    )
    verify_model_folder(folder)
    assert not (folder / "stale.bin").exists()

    counting.gets.clear()
    sync_from_s3(uri, model_dir, [NAME], counting)
    assert counting.gets == [key_of(uri, "manifest.json")]


@pytest.mark.parametrize("replacement", [b"x" * len(FILES["model.safetensors"]), b"shorter"])
def test_a_corrupt_object_fails_the_sync_naming_it(
    pushed: Path, uri: str, client: Any, tmp_path: Path, service_settings: Settings, replacement: bytes
) -> None:
    key = key_of(uri, "model.safetensors")
    client.put_object(Bucket=service_settings.s3_bucket, Key=key, Body=replacement)
    model_dir = tmp_path / "models"
    with pytest.raises(ModelWeightsError) as error:
        sync_from_s3(uri, model_dir, [NAME], client)
    assert str(error.value).startswith(f"s3://{service_settings.s3_bucket}/{key}: ")
    assert "manifest says" in str(error.value)
    folder = model_dir / NAME
    assert not (folder / "model.safetensors").exists()
    assert not [path for path in folder.rglob(".*")]
    with pytest.raises(ModelWeightsError, match=r"model\.safetensors: listed in"):
        verify_model_folder(folder)  # the half-synced folder cannot pass for a complete one


def test_a_prefix_without_a_manifest_is_a_clear_error(uri: str, client: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelWeightsError) as error:
        sync_from_s3(uri, tmp_path / "models", [NAME], client)
    advice = f"upload the model with `smartseg models push {NAME} --uri {uri}`"
    assert str(error.value) == f"{uri}/{NAME}/manifest.json not found: {advice}"


def test_prepare_models_copies_from_the_model_uri(
    pushed: Path, uri: str, tmp_path: Path, service_settings: Settings
) -> None:
    settings = service_settings.updated(model_dir=str(tmp_path / "models"), model_uri=uri)
    assert prepare_models(settings, [NAME]) == {NAME: tmp_path / "models" / NAME}
    verify_model_folder(tmp_path / "models" / NAME)
    assert (tmp_path / "models" / NAME / "model.safetensors").read_bytes() == FILES["model.safetensors"]


def test_cli_push_then_prepare(
    tmp_path: Path, uri: str, service_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in service_settings.to_env().items():
        monkeypatch.setenv(name, value)
    source = tmp_path / "source"
    for relative, data in FILES.items():
        (source / NAME / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / NAME / relative).write_bytes(data)
    assert main(["models", "push", NAME, "--uri", uri, "--dir", str(source)]) == 0
    assert (source / NAME / "manifest.json").is_file()
    settings = service_settings.updated(model_dir=str(tmp_path / "models"), model_uri=uri)
    assert prepare_models(settings, [NAME]) == {NAME: tmp_path / "models" / NAME}
