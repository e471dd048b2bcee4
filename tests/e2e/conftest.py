"""The launcher's stack as real processes: the API and a worker per served region."""

from __future__ import annotations

import contextlib
import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from smartseg.cli.launcher import Stack
from smartseg.shared.credentials import hash_api_key
from smartseg.shared.ports import free_port_run
from smartseg.shared.settings import Settings
from smartseg.testing.api_client import JsonClient
from smartseg.testing.image_server import serve_pngs

SERVED_REGIONS = ["us-east", "eu-west"]
IDLE_REGION = "ap-south"  # configured, no worker: jobs that require it stay queued, others move


@dataclass
class ImageServer:
    base_url: str
    images: dict[str, bytes]

    def add_png(self, name: str, image: Any) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.images[name] = buffer.getvalue()
        return f"{self.base_url}/{name}"


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    images: dict[str, bytes] = {}
    with serve_pngs(images) as base_url:
        yield ImageServer(base_url, images)


@contextlib.contextmanager
def redis_user(url: str) -> Iterator[tuple[str, str]]:
    """``url`` as a Redis user of its own with a password (an ACL user, removed afterwards), and the
    password, which no process given that URL may print."""
    password, user = f"pw-{secrets.token_hex(12)}", f"e2e-{secrets.token_hex(4)}"
    scheme, rest = url.split("://", 1)
    with contextlib.closing(redis.Redis.from_url(url)) as client:
        client.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"], commands=["+@all"]
        )
        try:
            yield f"{scheme}://{user}:{password}@{rest.rsplit('@', 1)[-1]}", password
        finally:
            client.acl_deluser(user)


@dataclass
class RunningStack:
    stack: Stack
    api_key: str
    other_api_key: str
    redis_password: str

    def client(self, api_key: str | None = None) -> JsonClient:
        return JsonClient(self.stack.api_url, api_key or self.api_key)


@pytest.fixture(scope="package")
def running_stack(
    service_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    api_key, other_key = f"sk-test-{secrets.token_hex(8)}", f"sk-other-{secrets.token_hex(8)}"
    with redis_user(service_settings.require_redis_url()) as (redis_url, redis_password):
        settings = service_settings.updated(
            **{
                "redis_url": redis_url,
                # What production runs: JSON logs (tests/e2e/test_observability.py reads them all), and a
                # metrics port per process, from this one on.
                "log_format": "json",
                "metrics_port": free_port_run(len(SERVED_REGIONS) + 2),
                "key_prefix": f"e2e-{secrets.token_hex(4)}",
                "regions": [*SERVED_REGIONS, IDLE_REGION],
                "api_key_hashes": [hash_api_key(api_key), hash_api_key(other_key)],
                "fetch_allowed_networks": ["127.0.0.0/8"],
                "fetch_allowed_ports": ["*"],
                "api_port": 0,
                "price_usd": "0.37",
                # Webhook retries in a fraction of a second, not a day.
                "webhook_retry_schedule_s": ["0.2", "0.2", "0.2"],
                "webhook_timeout_s": 1.0,
                # Batch manifests may be read from here with the service's own S3 credentials.
                "manifest_s3_prefixes": [f"{service_settings.s3_bucket}/manifests/"],
            }
        )
        stack = Stack(settings, Path(tmp_path_factory.mktemp("stack")), worker_regions=SERVED_REGIONS).start()
        yield RunningStack(stack, api_key, other_key, redis_password)
        stack.stop()
