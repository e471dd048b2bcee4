"""What ``smartseg up`` prints once the stack is ready: where everything is, and a first job to paste."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from smartseg.api.pages import STATIC
from smartseg.cli.launcher import Stack
from smartseg.shared.env_file import DEFAULT_RUN_DIR, ENV_FILE_VARIABLE


@dataclass(frozen=True)
class Sample:
    path: Path
    prompt: str  # the headline prompt, one lite finds


def samples_dir() -> Path:
    """The sample images shipped with the API (served at ``/samples/`` for the playground)."""
    return STATIC / "samples"


def first_sample() -> Sample:
    index = json.loads((samples_dir() / "index.json").read_text())
    sample = index["samples"][0]
    # Resolved: an editable install reaches it through a link, which is no path to show a user.
    return Sample((samples_dir() / sample["file"]).resolve(), sample["prompts"][0])


def first_job_commands(api_url: str, api_key: str, sample: Sample) -> list[str]:
    """A CLI line and a curl line that work offline, pasted as they are (bash or zsh)."""
    path = shlex.quote(str(sample.path))
    body = (
        '{"image_url": "data:image/jpeg;base64,\'"$(base64 < ' + path + " | tr -d '\\n')\"'\", "
        f'"prompt": "{sample.prompt}", "options": {{"pipeline": "lite"}}}}'
    )
    return [
        f'smartseg segment {path} "{sample.prompt}" --pipeline lite -o smartseg-out',
        f"curl -s {api_url}/v1/segmentations -H 'Authorization: Bearer {api_key}' "
        "-H 'Content-Type: application/json' -H 'Prefer: wait=30' \\\n"
        f"    -d '{body}'",
    ]


def print_welcome(stack: Stack, api_key: str, env_file: Path) -> None:
    url = stack.api_url
    here = Path.cwd() / DEFAULT_RUN_DIR
    reach = (
        "read by the CLI and the SDK run from this folder"
        if env_file.parent == here
        else f"for the CLI and the SDK: export {ENV_FILE_VARIABLE}={env_file}"
    )
    lines = [
        "smartseg is up",
        f"  API         {url}    (docs {url}/docs)",
        f"  playground  {url}/",
        f"  API key     {api_key}",
        f"  env file    {env_file}  ({reach})",
        f"  logs        {stack.run_dir}    Ctrl-C stops everything",
        "",
        "A first job, offline, on a sample image (the `lite` pipeline sees colours and shapes):",
        *(f"  {command}" for command in first_job_commands(url, api_key, first_sample())),
        "",
    ]
    print("\n".join(lines), flush=True)
