"""``python -m smartseg.api``: serve the API with uvicorn, configured from ``SMARTSEG_*``."""

from __future__ import annotations

import socket
from types import FrameType

import uvicorn

from smartseg.api.app import create_app
from smartseg.api.waiter import JobWaiter
from smartseg.shared.logs import configure_logging
from smartseg.shared.settings import Settings

DRAIN_S = 10  # after SIGTERM, for requests in flight to finish (held waits answer at once)


class DrainingServer(uvicorn.Server):
    """uvicorn, whose SIGTERM also answers every request held by ``Prefer: wait`` at once, with its job as
    it stands: uvicorn stops accepting, then waits for the requests in flight, and a held one could keep
    it a minute."""

    def __init__(self, config: uvicorn.Config, waiter: JobWaiter) -> None:
        super().__init__(config)
        self.waiter = waiter

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.waiter.drain()
        super().handle_exit(sig, frame)


def main() -> None:
    settings = Settings()
    configure_logging(settings, "api")
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        # Its loggers go through the root handler, in the settings' format; RequestLog writes the access
        # log (route templates and key ids, no query strings), so uvicorn's own stays off.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=DRAIN_S,
    )
    # The launcher's socket when it passed one (family and type read from the descriptor itself).
    sockets = None if settings.api_socket_fd is None else [socket.socket(fileno=settings.api_socket_fd)]
    DrainingServer(config, app.state.services.waiter).run(sockets=sockets)


if __name__ == "__main__":
    main()
