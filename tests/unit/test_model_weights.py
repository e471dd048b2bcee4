"""Model folders on disk: manifests, verification naming the broken file, unsafe manifests, the offline hub
and the `smartseg models` commands. No network: the hub test points HF_ENDPOINT at a closed local port."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from botocore.response import StreamingBody

from smartseg.cli.commands import main
from smartseg.cli.launcher import free_ports
from smartseg.shared.settings import Settings
from smartseg.worker.model_weights import fetch_from_hub, prepare_models, sync_from_s3
from smartseg.worker.models.manifest import ModelWeightsError, verify_model_folder, write_manifest

NAME = "sam-vit-base"
WEIGHTS = os.urandom(4096)
FILES = {
    "config.json": b'{"model_type": "sam"}',
    "model.safetensors": WEIGHTS,
    "preprocessor_config.json": b'{"do_resize": true}',
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}


def make_folder(model_dir: Path, files: dict[str, bytes] = FILES) -> Path:
    folder = model_dir / NAME
    for relative, data in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = make_folder(tmp_path / "models")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_bytes(b"hub metadata")
    write_manifest(folder)
    return folder


def test_manifest_lists_every_model_file_but_hidden_ones_and_itself(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == {
        "model": NAME,
        "files": {
            relative: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for relative, data in sorted(FILES.items())
        },
    }
    verify_model_folder(folder)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    ("relative", "damage", "complaint"),
    [
        ("model.safetensors", flip_a_byte, "sha256"),
        ("tokenizer/vocab.txt", flip_a_byte, "sha256"),
        ("model.safetensors", truncate, "100 bytes"),
        ("model.safetensors", Path.unlink, "listed in"),
        ("tokenizer/vocab.txt", Path.unlink, "listed in"),
        ("config.json", Path.unlink, "listed in"),
    ],
)
def test_damage_is_reported_naming_the_file(
    folder: Path, relative: str, damage: Callable[[Path], object], complaint: str
) -> None:
    damage(folder / relative)
    with pytest.raises(ModelWeightsError, match=complaint) as error:
        verify_model_folder(folder)
    assert str(error.value).startswith(f"{folder / relative}: ")


def test_a_changed_file_is_hashed_again_even_after_its_hash_was_cached(folder: Path) -> None:
    an_hour_ago = time.time_ns() - 3600 * 10**9
    os.utime(folder / "model.safetensors", ns=(an_hour_ago, an_hour_ago))  # settled: its hash is cached
    verify_model_folder(folder)
    flip_a_byte(folder / "model.safetensors")
    with pytest.raises(ModelWeightsError, match=r"model\.safetensors: sha256"):
        verify_model_folder(folder)


@pytest.mark.parametrize(
    ("missing", "complaint"),
    [
        ("config.json", "config.json: missing"),
        ("model.safetensors", "no weights file"),
    ],
)
def test_without_a_manifest_config_and_weights_must_exist(
    tmp_path: Path, missing: str, complaint: str
) -> None:
    folder = make_folder(tmp_path, {name: data for name, data in FILES.items() if name != missing})
    with pytest.raises(ModelWeightsError, match=complaint):
        verify_model_folder(folder)
    verify_model_folder(make_folder(tmp_path / "complete"))  # hand-made folders without a manifest pass


def test_a_shard_named_by_the_weights_index_must_exist(tmp_path: Path) -> None:
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    folder = make_folder(
        tmp_path,
        {
            "config.json": b"{}",
            "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": WEIGHTS,
        },
    )
    with pytest.raises(ModelWeightsError) as error:
        verify_model_folder(folder)
    assert str(error.value).startswith(f"{folder / 'model-00002-of-00002.safetensors'}: listed in")


def test_a_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ModelWeightsError, match=r"does not exist.*smartseg models fetch sam-vit-base"):
        verify_model_folder(tmp_path / NAME)


def test_a_manifest_for_another_model_is_refused(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "model": "sam-vit-huge"}))
    with pytest.raises(ModelWeightsError, match="for model 'sam-vit-huge', not 'sam-vit-base'"):
        verify_model_folder(folder)


UNSAFE_PATHS = ["../escaped.txt", "tokenizer/../../escaped.txt", "/tmp/escaped.txt", ".hidden", "a//b", ""]


def manifest_listing(relative: str, data: bytes = b"evil") -> bytes:
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return json.dumps({"model": NAME, "files": {relative: entry}}).encode()


@pytest.mark.parametrize("relative", UNSAFE_PATHS)
def test_a_local_manifest_path_outside_the_folder_is_refused(folder: Path, relative: str) -> None:
    (folder / "manifest.json").write_bytes(manifest_listing(relative))
    with pytest.raises(ModelWeightsError, match="not a plain path inside the model folder"):
        verify_model_folder(folder)


def test_a_symlink_leading_outside_the_folder_is_refused(folder: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (folder / "linked").symlink_to(tmp_path / "elsewhere")
    (folder / "manifest.json").write_bytes(manifest_listing("linked/x"))
    with pytest.raises(ModelWeightsError, match="leads outside"):
        verify_model_folder(folder)


class BucketOf:
    """The two boto3 calls sync_from_s3 makes, over a dict of keys."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        data = self.objects[Key]
        return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data)}


@pytest.mark.parametrize("relative", UNSAFE_PATHS)
def test_a_bucket_manifest_cannot_write_outside_model_dir(tmp_path: Path, relative: str) -> None:
    bucket = BucketOf({f"models/{NAME}/manifest.json": manifest_listing(relative), "escaped.txt": b"evil"})
    model_dir = tmp_path / "deep" / "models"
    with pytest.raises(ModelWeightsError, match=f"s3://b/models/{NAME}/manifest.json: file path"):
        sync_from_s3("s3://b/models", model_dir, [NAME], bucket)
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == []


def test_unknown_model_names_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelWeightsError, match=r"unknown model 'sam-vit-gigantic'; known models: .*sam3"):
        prepare_models(Settings(model_dir=str(tmp_path), model_uri=None), ["sam-vit-gigantic"])


def test_prepare_models_without_a_uri_verifies_the_local_folders(folder: Path) -> None:
    settings = Settings(model_dir=str(folder.parent), model_uri=None)
    assert prepare_models(settings, [NAME]) == {NAME: folder}
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelWeightsError, match=r"model\.safetensors: listed in"):
        prepare_models(settings, [NAME])


def test_an_unreachable_hub_fails_fast_and_says_what_to_do_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_ports(1)[0]}")  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ModelWeightsError) as error:
        fetch_from_hub([NAME], tmp_path / "models", timeout_s=2)
    assert time.monotonic() - started < 3
    message = str(error.value)
    for advice in (
        f"cannot get {NAME} (facebook/sam-vit-base) from the Hugging Face hub at http://127.0.0.1:",
        f"run `smartseg models fetch {NAME}` on a machine that has it",
        f"copy the folder {NAME}/ into SMARTSEG_MODEL_DIR here ({tmp_path / 'models'})",
        f"`smartseg models push {NAME} --uri s3://BUCKET/PREFIX`",
        "SMARTSEG_MODEL_URI=s3://BUCKET/PREFIX",
    ):
        assert advice in message
    assert "\n" not in message
    assert not (tmp_path / "models").exists()


def test_fetch_downloads_into_staging_then_renames_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "models"
    make_folder(model_dir, {"config.json": b"old", "pytorch_model.bin": b"old weights"})  # an older fetch
    repo_files = [*FILES, ".gitattributes", "pytorch_model.bin", "tf_model.h5"]
    calls: list[dict[str, Any]] = []

    class FakeHubApi:
        def __init__(self, endpoint: str | None) -> None:
            assert endpoint is None

        def model_info(self, repo_id: str, timeout: float) -> SimpleNamespace:
            siblings = [SimpleNamespace(rfilename=name) for name in repo_files]
            return SimpleNamespace(sha="c0ffee", siblings=siblings)

    def fake_snapshot_download(**kwargs: Any) -> str:
        calls.append(kwargs)
        local_dir = Path(kwargs["local_dir"])
        assert (local_dir / "pytorch_model.bin").exists()  # the earlier copy was moved here, not dropped
        for relative, data in {**FILES, ".gitattributes": b"*.bin lfs"}.items():
            (local_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (local_dir / relative).write_bytes(data)
        return str(local_dir)

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHubApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    fetch_from_hub([NAME], model_dir)

    [call] = calls
    assert (call["repo_id"], call["revision"]) == ("facebook/sam-vit-base", "c0ffee")
    assert call["local_dir"] == model_dir / ".fetching" / NAME
    assert {"*.bin", "*.h5"} <= set(call["ignore_patterns"])  # safetensors exist: no second copy
    folder = model_dir / NAME
    verify_model_folder(folder)
    assert set(json.loads((folder / "manifest.json").read_text())["files"]) == set(FILES)
    assert not (folder / "pytorch_model.bin").exists()  # stale: the repo no longer ships it
    assert not (model_dir / ".fetching" / NAME).exists()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_verify_exit_codes(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = str(folder.parent)
    code, out, err = run_cli(capsys, "models", "verify", NAME, "--dir", model_dir)
    assert (code, err) == (0, "")
    assert f"{NAME}: ok" in out

    truncate(folder / "model.safetensors")
    code, out, err = run_cli(capsys, "models", "verify", NAME, "--dir", model_dir)
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith(f"smartseg models verify: {folder / 'model.safetensors'}: 100 bytes")
    assert "Traceback" not in err

    code, out, err = run_cli(capsys, "models", "verify", "nope", "--dir", model_dir)
    assert code == 1
    assert err.startswith("smartseg models verify: unknown model 'nope'; known models: grounding-dino-tiny")


def test_cli_list_shows_every_known_model_and_fails_on_a_broken_one(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = str(folder.parent)
    code, out, _ = run_cli(capsys, "models", "list", "--dir", model_dir)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines[NAME].endswith("verified")
    assert lines["sam3"].endswith("missing")
    assert len(lines) == 10

    flip_a_byte(folder / "config.json")
    code, out, _ = run_cli(capsys, "models", "list", "--dir", model_dir)
    assert code == 1
    assert f"BROKEN: {folder / 'config.json'}: sha256" in out


def test_cli_manifest_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path)
    code, out, _ = run_cli(capsys, "models", "manifest", NAME, "--dir", str(tmp_path))
    assert (code, out) == (0, f"{NAME}: wrote {folder / 'manifest.json'}\n")
    code, out, _ = run_cli(capsys, "models", "verify", NAME, "--dir", str(tmp_path))
    assert (code, "matches its manifest" in out) == (0, True)
