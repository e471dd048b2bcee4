"""Where Redis is: a plain ``redis://`` URL, or ``redis+sentinel://`` naming Sentinels and a master.

``redis+sentinel://[:password@]host:port[,host:port...]/<master name>[/<db>]``: the password is the
data servers' and the Sentinels' (as managed offerings set them up); clients ask the Sentinels where the
master is and follow it after a failover. A managed Multi-AZ endpoint is a plain ``redis://`` URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from smartseg.shared.errors import StartupError

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: list[tuple[str, int]]
    master: str
    db: int
    password: str | None

    def kombu_url(self) -> str:
        """The Celery broker URL: kombu's sentinel transport takes one ``sentinel://`` URL per Sentinel
        (the master's name goes in the transport options)."""
        auth = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels)


def sentinel_address(url: str) -> SentinelAddress | None:
    """The Sentinels ``url`` names, or None for a plain Redis URL."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        return None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for entry in filter(None, hosts.split(",")):
        host, _, port = entry.rpartition(":") if ":" in entry else (entry, "", str(SENTINEL_PORT))
        try:
            sentinels.append((host or entry, int(port)))
        except ValueError:
            raise StartupError(f"SMARTSEG_REDIS_URL: {entry!r} is not host:port") from None
    names = [segment for segment in parts.path.split("/") if segment]
    if not sentinels or not names:
        raise StartupError(
            f"SMARTSEG_REDIS_URL: expected {SENTINEL_SCHEME}://host:port[,...]/<master>[/<db>]"
        )
    password = unquote(parts.password) if parts.password else None
    return SentinelAddress(sentinels, names[0], int(names[1]) if len(names) > 1 else 0, password)
