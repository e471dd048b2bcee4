"""The ``smartseg`` command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from shared.credentials import hash_api_key
from shared.settings import Settings

LOCAL_NETWORKS = "127.0.0.0/8"


def local_settings(args: argparse.Namespace, api_key: str, allow_loopback_images: bool) -> Settings:
    settings = Settings()
    updates: dict[str, object] = {
        "api_port": args.port,
        "api_key_hashes": [*settings.api_key_hashes, hash_api_key(api_key)],
    }
    if allow_loopback_images:
        updates["fetch_allowed_networks"] = [*settings.fetch_allowed_networks, LOCAL_NETWORKS]
    return settings.updated(**updates)


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="smartseg-"))


def command_up(args: argparse.Namespace) -> int:
    from shared.launcher import Stack, demo_api_key

    api_key = args.api_key or demo_api_key()
    stack = Stack(local_settings(args, api_key, args.allow_loopback_images), run_dir(args)).start()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"smartseg is up: API {stack.api_url}  (docs {stack.api_url}/docs)")
    print(f"API key: {api_key}")
    print(f"logs and pids: {stack.run_dir}    Ctrl-C stops everything")
    try:
        while not stopping:
            time.sleep(0.2)
    finally:
        stack.stop()
    return 0


def command_demo(args: argparse.Namespace) -> int:
    from shared.demo import run_demo
    from shared.launcher import Stack, demo_api_key

    api_key = demo_api_key()
    print("starting the stack (embedded Redis, SeaweedFS S3, API, one worker per region)...")
    stack = Stack(local_settings(args, api_key, allow_loopback_images=True), run_dir(args)).start()
    try:
        regions = ",".join(stack.settings.regions)
        print(f"stack up: API {stack.api_url}, regions {regions}, logs in {stack.run_dir}")
        ok = run_demo(stack, api_key, Path(args.out))
    finally:
        stack.stop()
    print("demo finished: every job succeeded" if ok else "demo finished: some jobs did not succeed")
    return 0 if ok else 1


def command_exec(module: str) -> int:
    """``smartseg api`` / ``smartseg worker`` become ``python -m api|worker`` (shared imports neither)."""
    os.execv(sys.executable, [sys.executable, "-m", module])  # noqa: S606 - argv is ours, no shell
    return 0  # not reached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartseg", description="Self-hostable smart segmentation service.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "run the whole stack locally until Ctrl-C"), ("demo", "run demo jobs")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
        sub.add_argument("--run-dir", help="where logs and pids go (default: a new temp dir)")
        if name == "up":
            sub.add_argument("--api-key", help="API key to accept (default: a new random one, printed)")
            sub.add_argument(
                "--allow-loopback-images",
                action="store_true",
                help=f"let jobs fetch images from {LOCAL_NETWORKS}",
            )
        else:
            sub.add_argument("--out", default="demo-out", help="folder for masks and overlays")
    commands.add_parser("api", help="serve the API (configured by SMARTSEG_* variables)")
    commands.add_parser("worker", help="run one worker for SMARTSEG_REGION")
    keys = commands.add_parser("keys", help="API key helpers")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    hash_parser = keys_commands.add_parser("hash", help="print the SHA-256 to put in SMARTSEG_API_KEY_HASHES")
    hash_parser.add_argument("key")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.command == "up":
        return command_up(args)
    if args.command == "demo":
        return command_demo(args)
    if args.command in ("api", "worker"):
        return command_exec(args.command)
    print(hash_api_key(args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
