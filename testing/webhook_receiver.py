"""A loopback webhook receiver for tests and the README's walk-through: it records every POST (headers and
body) and answers each with the next of a script of answers, then 204."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG = "hang"  # an answer: say nothing for longer than any sender waits


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | None  # None: the receiver hung


@dataclass
class WebhookReceiver:
    url: str
    answers: list[int | str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hang_s: float = 3.0


@contextmanager
def serve_webhooks(answers: list[int | str] | None = None, hang_s: float = 3.0) -> Iterator[WebhookReceiver]:
    """A receiver on 127.0.0.1; ``answers`` (status codes, or HANG) are used up in order."""
    lock = threading.Lock()
    receiver = WebhookReceiver(url="", answers=list(answers or []), hang_s=hang_s)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                answer = receiver.answers.pop(0) if receiver.answers else 204
                status = None if answer == HANG else int(answer)
                receiver.received.append(Received(self.path, dict(self.headers.items()), body, status))
            if status is None:
                time.sleep(receiver.hang_s)
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
