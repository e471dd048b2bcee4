"""A loopback TCP forwarder that can cut a service off: the S3 outage in the chaos tests."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

BUFFER_BYTES = 65536
LINGER_ZERO = struct.pack("ii", 1, 0)  # close with an RST, not a polite FIN: the peer sees a failure


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``. While down, every open connection is reset and new
    ones are reset as soon as they are accepted, as when a server or the network in between goes away."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.down = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_forever, name="tcp-proxy", daemon=True).start()

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # wakes its pump thread, which closes it
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.down.clear()

    @contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        """Cut off while the block runs and ``seconds`` after it, then restored (even if the block fails)."""
        self.cut()
        try:
            yield
            time.sleep(seconds)
        finally:
            self.restore()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept_forever(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.down.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(BUFFER_BYTES):
                sink.sendall(chunk)
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        sock.close()
