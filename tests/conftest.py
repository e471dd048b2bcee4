"""Session fixtures: a real Redis and a real S3 server (SeaweedFS), embedded unless SMARTSEG_* names them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartseg.cli.launcher import EmbeddedRedis, EmbeddedS3
from smartseg.shared.settings import Settings


@pytest.fixture(scope="session")
def env_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def redis_url(env_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if env_settings.redis_url:
        yield env_settings.redis_url
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield url
    server.stop()


@pytest.fixture(scope="session")
def s3_settings(
    env_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    if env_settings.s3_endpoint:
        yield {"s3_endpoint": env_settings.s3_endpoint}
        return
    secret = secrets.token_urlsafe(16)
    server = EmbeddedS3(Path(tmp_path_factory.mktemp("s3")), env_settings.s3_access_key, secret, "masks")
    endpoint = server.start()
    yield {"s3_endpoint": endpoint, "s3_secret_key": secret, "s3_bucket": "masks"}
    server.stop()


TINY_MODELS = ("grounding-dino-tiny", "sam-vit-base", "sam2.1-hiera-tiny", "sam3")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight models of every architecture, saved as published checkpoints are, with manifests."""
    from smartseg.testing.random_weights import save_random_model
    from smartseg.worker.models.manifest import write_manifest

    model_dir = Path(tmp_path_factory.mktemp("models"))
    for name in TINY_MODELS:
        save_random_model(name, model_dir / name, size="tiny")
        write_manifest(model_dir / name)
    return model_dir


@pytest.fixture(scope="session")
def service_settings(env_settings: Settings, redis_url: str, s3_settings: dict[str, object]) -> Settings:
    """Settings pointing at the real services, with a key prefix of this session's own. Tests poll far
    faster than a client should, so their keys get a rate limit they never reach (tests of the limit set
    their own)."""
    return env_settings.updated(
        **{
            "redis_url": redis_url,
            "key_prefix": f"test-{secrets.token_hex(4)}",
            "rate_limit_per_s": 10_000.0,
            "rate_limit_burst": 10_000,
            **s3_settings,
        }
    )
