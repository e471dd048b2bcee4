"""``python -m smartseg.api``: serve the API with uvicorn, configured from ``SMARTSEG_*``."""

from __future__ import annotations

import logging
import socket

import uvicorn

from smartseg.api.app import create_app
from smartseg.shared.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s api %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    # The launcher's socket when it passed one (family and type read from the descriptor itself).
    sockets = None if settings.api_socket_fd is None else [socket.socket(fileno=settings.api_socket_fd)]
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
