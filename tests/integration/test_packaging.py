"""The wheel installs one top-level package, ``smartseg`` (its ``__init__`` is the SDK's front door), with
its Lua scripts, static files and type markers."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = {"api", "cli", "shared", "testing", "worker"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            ROOT,
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("smartseg-*.whl")
    return built


def test_the_only_top_level_package_is_smartseg(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"smartseg"}
    assert {name.split("/")[1] for name in names if name.startswith("smartseg/")} == {
        *SUBPACKAGES,
        "__init__.py",
        "py.typed",
    }
    # Data the code loads at run time, and the PEP 561 markers, travel in the wheel.
    assert "smartseg/shared/lua/claim.lua" in names
    assert {f"smartseg/{package}/py.typed" for package in SUBPACKAGES} <= set(names)
    # No repo folder leaks out under its own name.
    assert not any(
        name.startswith(("api/", "worker/", "shared/", "sdk/", "tests/", "bench/")) for name in names
    )


def test_import_smartseg_in_a_clean_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel],
        check=True,
        capture_output=True,
    )
    # Without the dependencies only modules that need none import; that is enough to see the layout.
    script = (
        "import smartseg, smartseg.shared.errors, smartseg.shared.keys; "
        "assert 'Client' in smartseg.__all__; "  # the SDK's names, loaded only on first use
        "print(smartseg.shared.errors.__file__)"
    )
    found = subprocess.run([python, "-c", script], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert found.stdout.strip().startswith(str(venv / "lib"))


@pytest.mark.parametrize("dockerfile", ["api.Dockerfile", "worker.Dockerfile"])
def test_the_images_copy_every_folder_the_package_is_made_of(dockerfile: str) -> None:
    # `pip install .` in an image fails on a folder pyproject.toml maps but the Dockerfile leaves out.
    import tomllib

    folders = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    text = (ROOT / "deploy" / dockerfile).read_text()
    assert {folder for folder in folders if f"COPY {folder} {folder}" not in text} == set()
