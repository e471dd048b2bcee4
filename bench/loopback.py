"""What the benches that start a stack share: its settings, and the times of its job records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smartseg.shared.settings import Settings


def stack_settings(**updates: Any) -> Settings:
    """Settings for a stack a bench drives from this machine: a free API port, quiet logs, no rate limit
    on the bench's own load, and images fetched from a loopback server."""
    return Settings().updated(
        api_port=0,
        log_level="WARNING",
        rate_limit_per_s=1e6,
        rate_limit_burst=1_000_000,
        fetch_allowed_networks=["127.0.0.0/8"],
        fetch_allowed_ports=["*"],
        **updates,
    )


def timestamp(iso: str) -> float:
    """Seconds since the epoch of a time as the API shows it (`2026-11-24T08:00:00.120Z`)."""
    return datetime.fromisoformat(iso).timestamp()
