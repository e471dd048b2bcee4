"""The env file ``smartseg up`` writes: how a running local stack is reached (API URL and key, Redis, S3).

The CLI and the Python SDK read it when nothing else names the stack, so commands run from the folder
``smartseg up`` was started in (or with ``SMARTSEG_ENV_FILE`` pointing at it) talk to that stack.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

__all__ = ["DEFAULT_RUN_DIR", "ENV_FILE_NAME", "ENV_FILE_VARIABLE", "find_env_file", "read_env_file"]

DEFAULT_RUN_DIR = ".smartseg"  # `smartseg up`'s run dir, relative to where it is started
ENV_FILE_NAME = "smartseg.env"
ENV_FILE_VARIABLE = "SMARTSEG_ENV_FILE"


def find_env_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$SMARTSEG_ENV_FILE``, else ``./.smartseg/smartseg.env`` when it exists."""
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_FILE_VARIABLE)
    if named:
        return Path(named)
    default = Path(DEFAULT_RUN_DIR) / ENV_FILE_NAME
    return default if default.is_file() else None


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (dotenv syntax); names without a value are left out."""
    return {name: value for name, value in dotenv_values(path).items() if value is not None}


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Written readable by its owner only: it holds the API key and the S3 secret."""
    lines = [f"{name}={_quoted(value)}\n" for name, value in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.touch(mode=0o600)
    temporary.chmod(0o600)
    temporary.write_text("".join(lines))
    temporary.replace(path)  # readers never see half a file


def _quoted(value: str) -> str:
    """Single-quoted, so a shell's ``. file`` and dotenv both read it back unchanged (neither can hold a
    quote or a line break the same way; URLs, keys and the generated secrets have none)."""
    if "'" in value or "\n" in value:
        raise ValueError("an env file value cannot hold a single quote or a line break")
    return f"'{value}'"
