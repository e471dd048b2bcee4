"""The ``smartseg`` command."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from smartseg.cli.api_commands import API_COMMANDS, add_api_parsers, run_api_command
from smartseg.shared.api_keys import LIMIT_FIELDS, ApiKey, ApiKeyStore, KeyLimits
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.env_file import DEFAULT_RUN_DIR, ENV_FILE_NAME, find_env_file, write_env_file
from smartseg.shared.errors import InvalidRequest, MissingSetting, SmartsegError, StackStartError
from smartseg.shared.redis_connection import redis_client
from smartseg.shared.settings import Settings

if TYPE_CHECKING:
    from smartseg.cli.launcher import Stack

LOCAL_NETWORKS = "127.0.0.0/8"
DEFAULT_LIMIT = "default"  # `keys update --max-active-jobs default`: back to the setting's value


def local_settings(args: argparse.Namespace, api_key: str, allow_loopback_images: bool) -> Settings:
    settings = Settings()
    updates: dict[str, object] = {
        "api_port": args.port,
        "api_key_hashes": [*settings.api_key_hashes, hash_api_key(api_key)],
    }
    if allow_loopback_images:
        updates["fetch_allowed_networks"] = [*settings.fetch_allowed_networks, LOCAL_NETWORKS]
        updates["fetch_allowed_ports"] = ["*"]  # a local image server listens where the OS put it
    return settings.updated(**updates)


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="smartseg-"))


@contextlib.contextmanager
def run_dir_lock(folder: Path) -> Iterator[None]:
    """One `smartseg up` per run dir: a second one would overwrite the first one's env file and pids."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "up.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackStartError(
                f"another `smartseg up` is running with the run dir {folder}: stop it, or pass --run-dir"
            ) from None
        yield


def command_up(args: argparse.Namespace) -> int:
    """Exits 0 on Ctrl-C or SIGTERM; 1 when the stack cannot start or one of its processes dies (then
    every other one is stopped too: a stack without its API, router or a worker is not what was asked)."""
    from smartseg.cli.launcher import Stack, demo_api_key
    from smartseg.cli.walkthrough import print_welcome

    api_key = args.api_key or demo_api_key()
    folder = Path(args.run_dir or DEFAULT_RUN_DIR).resolve()
    try:
        with run_dir_lock(folder):
            stack = Stack(local_settings(args, api_key, args.allow_loopback_images), folder).start()
            return serve_until_stopped(stack, api_key, print_welcome)
    except StackStartError as exc:
        print(f"smartseg up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting: what had started is stopped already
        return 130


def serve_until_stopped(stack: Stack, api_key: str, welcome: Callable[[Stack, str, Path], None]) -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env_file = stack.run_dir / ENV_FILE_NAME
    try:
        write_env_file(env_file, stack.connection_env(api_key))
        welcome(stack, api_key, env_file)
        while not stopping:
            if dead := stack.exited():
                for name, code in dead.items():
                    print(
                        f"smartseg up: {name} exited (code {code}); see {stack.log_file(name)}",
                        file=sys.stderr,
                    )
                print("smartseg up: stopping the rest of the stack", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        env_file.unlink(missing_ok=True)  # a stopped stack's address must not be used by the CLI
        stack.stop()


def cli_settings() -> Settings:
    """Settings for the CLI's own work (``health``, ``keys``, ``models push``): the environment first,
    then the env file of a running ``smartseg up`` (``SMARTSEG_ENV_FILE`` or ./.smartseg/smartseg.env)."""
    env_file = find_env_file()
    if env_file is not None and not env_file.is_file():
        raise SystemExit(f"smartseg: SMARTSEG_ENV_FILE names {env_file}, which does not exist")
    return Settings(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings' init-only argument


def command_demo(args: argparse.Namespace) -> int:
    from smartseg.cli.demo import run_demo
    from smartseg.cli.launcher import Stack, demo_api_key

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


def command_health(args: argparse.Namespace) -> int:
    """Exit 0 while this host's worker for SMARTSEG_REGION (or its router, or deliverer) beats; 1
    otherwise (a container probe)."""
    import socket

    from smartseg.shared.keys import Keys
    from smartseg.shared.liveness import is_live
    from smartseg.shared.regions import local_worker_is_live

    settings = cli_settings()
    keys, host = Keys(settings.key_prefix), socket.gethostname()
    what = f"a {settings.region} worker" if args.worker else f"a {args.role}"
    try:
        client = redis_client(settings.require_redis_url(), settings.redis_timeout_s)
        with client:
            if args.worker:
                live = local_worker_is_live(client, keys, settings.region, host, settings.heartbeat_ttl_s)
            else:
                live = is_live(client, keys, args.role, host)
    except (redis.RedisError, MissingSetting) as exc:
        print(f"smartseg health: cannot read heartbeats: {exc}", file=sys.stderr)
        return 1
    if not live:
        print(f"smartseg health: no fresh heartbeat from {what} on this host", file=sys.stderr)
        return 1
    print("ok")
    return 0


def limit_value(name: str, kind: type[float] | type[int]) -> Callable[[str], float | None]:
    """An argparse type for the key limit ``name``: a number within the setting's bounds, or ``default``."""

    def parse(text: str) -> float | None:
        if text == DEFAULT_LIMIT:
            return None
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a {'whole ' if kind is int else ''}number: {text!r}"
            ) from None
        try:
            KeyLimits.check(name, value)
        except InvalidRequest as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return parse


def shown_limits(key: ApiKey) -> str:
    """The key's own limits as ``keys create`` takes them (``limits=default`` if it has none)."""
    own = key.limits.stored().items()
    return ",".join(f"{name.replace('_', '-')}={value}" for name, value in own) or "limits=default"


def command_keys(args: argparse.Namespace) -> int:
    """``smartseg keys create|list|update|revoke|rotate`` against the settings' Redis."""
    from smartseg.shared.keys import Keys

    settings = cli_settings()
    try:
        with redis_client(settings.require_redis_url(), settings.redis_timeout_s) as client:
            store = ApiKeyStore(client, Keys(settings.key_prefix))
            if args.keys_command == "list":
                for key in store.list():
                    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.created_at))
                    print(f"{key.id}  {key.owner}  {created}  {shown_limits(key)}  {key.name}")
                return 0
            if args.keys_command == "revoke":
                print(f"revoked {store.revoke(args.id).id}")
                return 0
            # Options left out of `update` are not in args (argparse.SUPPRESS): those limits stay.
            limits = {name: getattr(args, name) for name in LIMIT_FIELDS if hasattr(args, name)}
            if args.keys_command == "update":
                _, key = store.get(args.id)
                key = store.update(args.id, replace(key.limits, **limits))
                print(f"updated {key.id}: {shown_limits(key)}")
                return 0
            if args.keys_command == "create":
                secret, key = store.create(args.name, limits=KeyLimits(**limits))
            else:
                secret, key = store.rotate(args.id)
    except (SmartsegError, redis.RedisError) as exc:
        print(f"smartseg keys {args.keys_command}: {exc}", file=sys.stderr)
        return 1
    print(
        f"{key.id} ({key.name}, owner {key.owner}, {shown_limits(key)}); the key, shown this once:",
        file=sys.stderr,
    )
    print(secret)
    return 0


def command_exec(module: str) -> int:
    """``smartseg api|worker|router`` become ``python -m smartseg.<module>``: the service's own process."""
    os.execv(sys.executable, [sys.executable, "-m", module])  # noqa: S606 - argv is ours, no shell
    return 0  # not reached


def command_models(args: argparse.Namespace) -> int:
    """``smartseg models ...``: exit 1 with one line on stderr per problem, no traceback for expected ones."""
    from smartseg.worker.models.manifest import known_specs

    settings = cli_settings()
    model_dir = Path(args.dir or settings.model_dir)
    try:
        if args.models_command == "list":
            return models_list(model_dir)
        known_specs(args.names)  # an unknown name fails before any work, listing the known ones
        if args.models_command == "fetch":
            return models_fetch(args.names, model_dir)
        if args.models_command == "push":
            return models_push(args.names, model_dir, args.uri, settings)
        if args.models_command == "manifest":
            return models_manifest(args.names, model_dir)
        return models_verify(args.names, model_dir)
    # ModelWeightsError, a missing setting such as SMARTSEG_S3_ENDPOINT, an S3 refusal...
    except (SmartsegError, OSError) as exc:
        print(f"smartseg models {args.models_command}: {exc}", file=sys.stderr)
        return 1


def models_list(model_dir: Path) -> int:
    from smartseg.worker.models.catalog import MODELS
    from smartseg.worker.models.manifest import MANIFEST, ModelWeightsError, verify_model_folder

    broken = False
    print(f"models in {model_dir}:")
    for name, spec in MODELS.items():
        folder = model_dir / name
        if not folder.exists():
            status = "missing"
        else:
            try:
                verify_model_folder(folder)
                status = "verified" if (folder / MANIFEST).is_file() else "present (no manifest to verify)"
            except ModelWeightsError as exc:
                status, broken = f"BROKEN: {exc}", True
        print(f"  {name:24} {spec.architecture:15} {status}")
    return 1 if broken else 0


def models_fetch(names: list[str], model_dir: Path) -> int:
    from smartseg.worker.model_weights import fetch_from_hub

    for name in names:
        fetch_from_hub([name], model_dir)
        print(f"{name}: fetched into {model_dir / name}")
    return 0


def models_push(names: list[str], model_dir: Path, uri: str, settings: Settings) -> int:
    from smartseg.shared.storage import s3_client
    from smartseg.worker.model_weights import parse_s3_uri, push_to_s3

    parse_s3_uri(uri)  # a typo in the URI fails before any hashing
    client = s3_client(settings, settings.require_s3_endpoint())
    for name in names:
        push_to_s3(model_dir / name, uri, client)
        print(f"{name}: pushed to {uri.rstrip('/')}/{name}/")
    return 0


def models_manifest(names: list[str], model_dir: Path) -> int:
    from smartseg.worker.models.manifest import write_manifest

    for name in names:
        print(f"{name}: wrote {write_manifest(model_dir / name)}")
    return 0


def models_verify(names: list[str], model_dir: Path) -> int:
    from smartseg.worker.models.manifest import MANIFEST, ModelWeightsError, verify_model_folder

    failed = False
    for name in names:
        try:
            verify_model_folder(model_dir / name)
        except ModelWeightsError as exc:
            print(f"smartseg models verify: {exc}", file=sys.stderr)
            failed = True
            continue
        what = "matches its manifest" if (model_dir / name / MANIFEST).is_file() else "has config and weights"
        print(f"{name}: ok ({model_dir / name} {what})")
    return 1 if failed else 0


def add_models_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser("models", help="model weights: fetch from the hub, push to S3, verify")
    models_commands = models.add_subparsers(dest="models_command", required=True)
    for name, help_text in (
        ("fetch", "download from the Hugging Face hub into the model dir and write manifests"),
        ("push", "upload model folders (with manifests) to an S3 prefix, for SMARTSEG_MODEL_URI"),
        ("manifest", "(re)write manifest.json for folders you put in the model dir yourself"),
        ("verify", "check folders against their manifests"),
        ("list", "known models and their state in the model dir"),
    ):
        sub = models_commands.add_parser(name, help=help_text)
        if name != "list":
            sub.add_argument(
                "names", nargs="+", metavar="NAME", help="model name (see `smartseg models list`)"
            )
        if name == "push":
            sub.add_argument(
                "--uri", required=True, help="s3://bucket/prefix (SMARTSEG_S3_* name the server)"
            )
        sub.add_argument("--dir", help="model dir (default: SMARTSEG_MODEL_DIR, else ./models)")


def add_limit_options(parser: argparse.ArgumentParser, default: object) -> None:
    """``--rate-limit-per-s`` ... : a key's own limits, each in place of its SMARTSEG_ setting."""
    for name, kind, meaning in (
        ("rate_limit_per_s", float, "tokens per second of each budget; 0: no rate limit"),
        ("rate_limit_burst", int, "tokens a budget holds"),
        ("max_active_jobs", int, "jobs queued or running at once; 0: no cap"),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=limit_value(name, kind),
            default=default,
            metavar="N",
            help=f"{meaning} (`{DEFAULT_LIMIT}`: SMARTSEG_{name.upper()})",
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartseg", description="Self-hostable smart segmentation service.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "run the whole stack locally until Ctrl-C"), ("demo", "run demo jobs")):
        sub = commands.add_parser(name, help=help_text)
        if name == "up":
            sub.add_argument("--port", type=int, default=8000, help="API port (default 8000; 0: a free one)")
            sub.add_argument(
                "--run-dir",
                help=f"logs, data, pids and the env file (default: ./{DEFAULT_RUN_DIR}, which the CLI "
                "and the SDK read when run from here)",
            )
        else:
            sub.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
            sub.add_argument("--run-dir", help="where logs and pids go (default: a new temp dir)")
        if name == "up":
            sub.add_argument("--api-key", help="API key to accept (default: a new random one, printed)")
            sub.add_argument(
                "--allow-loopback-images",
                action="store_true",
                help=f"let jobs fetch images from {LOCAL_NETWORKS}, on any port",
            )
        else:
            sub.add_argument("--out", default="demo-out", help="folder for masks and overlays")
    commands.add_parser("api", help="serve the API (configured by SMARTSEG_* variables)")
    commands.add_parser("worker", help="run one worker for SMARTSEG_REGION")
    commands.add_parser("router", help="move the queued work of dead regions to healthy ones")
    commands.add_parser("deliverer", help="send the queued webhook deliveries, signed, with retries")
    keys = commands.add_parser("keys", help="API keys: create, list, update, revoke, rotate (in Redis), hash")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="a new key, printed once; only its hash is stored")
    create.add_argument("--name", required=True, help="what the key is for (shown by `keys list`)")
    add_limit_options(create, default=None)
    keys_commands.add_parser("list", help="live keys: id, owner, created, own limits, name")
    update = keys_commands.add_parser("update", help="change a key's own limits; the others stay")
    update.add_argument("id", help="the key's id (key_...)")
    add_limit_options(update, default=argparse.SUPPRESS)
    for name, help_text in (
        ("revoke", "delete a key: refused from the next request on"),
        ("rotate", "a new key for the same owner, printed once; the old one revoked"),
    ):
        keys_commands.add_parser(name, help=help_text).add_argument("id", help="the key's id (key_...)")
    hash_parser = keys_commands.add_parser("hash", help="print the SHA-256 to put in SMARTSEG_API_KEY_HASHES")
    hash_parser.add_argument("key")  # fmt: skip
    health = commands.add_parser("health", help="probe: is this host's worker (router, deliverer) beating?")
    probed = health.add_mutually_exclusive_group(required=True)
    probed.add_argument("--worker", action="store_true", help="this host's worker of SMARTSEG_REGION")
    for role in ("router", "deliverer"):
        probed.add_argument(
            f"--{role}", dest="role", action="store_const", const=role, help=f"this host's {role}"
        )
    add_api_parsers(commands)
    add_models_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    if args.command == "up":
        return command_up(args)
    if args.command == "demo":
        return command_demo(args)
    if args.command in ("api", "worker"):
        return command_exec(f"smartseg.{args.command}")
    if args.command == "router":
        return command_exec("smartseg.worker.router")
    if args.command == "deliverer":
        return command_exec("smartseg.api.deliverer")
    if args.command == "models":
        return command_models(args)
    if args.command == "health":
        return command_health(args)
    if args.command in API_COMMANDS:
        return run_api_command(args)
    if args.keys_command == "hash":
        print(hash_api_key(args.key))
        return 0
    return command_keys(args)
