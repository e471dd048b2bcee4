"""A loopback HTTP server for PNG images: how the demo and the tests hand images to real jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def serve_pngs(images: dict[str, bytes], delays_s: dict[str, float] | None = None) -> Iterator[str]:
    """A loopback HTTP server for PNGs by name (added to ``images`` at any time); yields its base URL.

    The demo and the tests fetch sample images over HTTP the way real jobs do; ``delays_s`` makes some
    answers slow, for tests that need a job to be running at a given moment.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            body = images.get(name)
            if body is None:
                self.send_error(404)
                return
            time.sleep((delays_s or {}).get(name, 0.0))
            try:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                return  # the fetching worker was killed meanwhile (the chaos tests and benches do that)

        def log_message(self, format: str, *args: Any) -> None:  # keep the output readable
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
