"""ASGI middleware that refuses request bodies over a byte limit before they are buffered."""

from __future__ import annotations

import contextlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smartseg.shared.errors import PayloadTooLarge


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(send, self._too_large())
            return
        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise self._too_large()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:  # the app's answer to a body it could not read (FastAPI makes it a 400): dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        # A chunked body has no Content-Length: it is refused once it grows past the limit.
        with contextlib.suppress(PayloadTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._refuse(send, self._too_large())

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body over {self.max_bytes} bytes")

    async def _refuse(self, send: Send, error: PayloadTooLarge) -> None:
        body = json.dumps({"error": error.to_dict()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
