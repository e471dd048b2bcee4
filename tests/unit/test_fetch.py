"""SSRF-safe image fetching: URL checks, address checks, redirects, limits and the pinned transport."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpcore
import httpx
import pytest
from pydantic import ValidationError

from smartseg.shared.errors import ImageFetchFailed, ImageTooLarge, ImageURLForbidden
from smartseg.shared.fetch import (
    FetchedImage,
    FetchLimits,
    ImageFetcher,
    check_image_url,
    fetch_limits,
    image_filename_stem,
)
from smartseg.shared.settings import Settings

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PUBLIC_IP = "93.184.216.34"
LOOPBACK = ("127.0.0.0/8",)
STALL_PAUSE = 0.6

Handler = Callable[[httpx.Request], httpx.Response]


class FakeResolver:
    """Maps host names to address lists and records every lookup."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise OSError("Name or service not known")
        return self.table[host]


def image_response(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=IMAGE, headers={"Content-Type": "image/png; charset=binary"})


def make_fetcher(
    handler: Handler = image_response,
    table: dict[str, list[str]] | None = None,
    limits: FetchLimits | None = None,
) -> tuple[ImageFetcher, FakeResolver]:
    resolver = FakeResolver(table if table is not None else {"img.example.com": [PUBLIC_IP]})
    fetcher = ImageFetcher(limits or FetchLimits(), transport=httpx.MockTransport(handler), resolver=resolver)
    return fetcher, resolver


# --- http(s) through a mock transport ------------------------------------------------------------


def test_public_host_is_fetched() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return image_response(request)

    fetcher, resolver = make_fetcher(handler)
    result = fetcher.fetch("https://img.example.com/a/photo.png?x=1")
    assert result == FetchedImage(
        data=IMAGE, content_type="image/png", url="https://img.example.com/a/photo.png?x=1"
    )
    assert resolver.calls == [("img.example.com", 443)]
    assert seen[0].headers["host"] == "img.example.com"
    assert seen[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "2002:a00:1::1",
    ],
)
def test_host_resolving_to_special_address_is_forbidden(address: str) -> None:
    fetcher, _ = make_fetcher(table={"evil.example.com": [address]})
    with pytest.raises(ImageURLForbidden) as info:
        fetcher.fetch("http://evil.example.com/x.png")
    # The message names the host but never the internal address it resolved to.
    assert "evil.example.com" in info.value.message
    assert address not in info.value.message
    assert address not in str(info.value.details)


def test_one_special_address_among_public_ones_is_forbidden() -> None:
    fetcher, _ = make_fetcher(table={"mixed.example.com": [PUBLIC_IP, "10.0.0.7"]})
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch("http://mixed.example.com/x.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "http://[::ffff:192.168.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "http://2130706433/x.png",
        "http://0x7f.1/x.png",
    ],
)
def test_literal_special_address_is_forbidden_without_dns(url: str) -> None:
    fetcher, resolver = make_fetcher()
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch(url)
    with pytest.raises(ImageURLForbidden):
        check_image_url(url, FetchLimits())
    assert resolver.calls == []


def test_allowed_networks_let_loopback_through() -> None:
    fetcher, _ = make_fetcher(
        table={"demo.local": ["127.0.0.1"]}, limits=FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None)
    )
    assert fetcher.fetch("http://demo.local:8080/x.png").data == IMAGE
    assert fetcher.fetch("http://127.0.0.1:8080/x.png").data == IMAGE
    check_image_url("http://127.0.0.1:8080/x.png", FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None))
    # Only the listed network is opened up.
    with pytest.raises(ImageURLForbidden):
        check_image_url("http://10.0.0.1/x.png", FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None))


def test_unresolvable_host_fails_to_fetch() -> None:
    fetcher, _ = make_fetcher(table={})
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch("http://nowhere.example.com/x.png")
    assert info.value.details == {"reason": "dns"}


def test_redirects_are_followed_and_each_hop_resolved() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "img.example.com":
            return httpx.Response(302, headers={"Location": "https://cdn.example.net/final.png"})
        if request.url.path == "/final.png":
            return httpx.Response(301, headers={"Location": "/real.png"})
        return image_response(request)

    table = {"img.example.com": [PUBLIC_IP], "cdn.example.net": ["8.8.8.8"]}
    fetcher, resolver = make_fetcher(handler, table)
    result = fetcher.fetch("http://img.example.com/start.png")
    assert result.url == "https://cdn.example.net/real.png"
    assert resolver.calls == [("img.example.com", 80), ("cdn.example.net", 443), ("cdn.example.net", 443)]


@pytest.mark.parametrize(
    "location",
    [
        "http://internal.example.com/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "http://user:pw@img.example.com/x.png",
        "http://img.example.com:6379/",  # a public address, but not a web port
    ],
)
def test_redirect_to_forbidden_target_is_refused(location: str) -> None:
    requested: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requested.append(str(request.url))
        return httpx.Response(302, headers={"Location": location})

    table = {"img.example.com": [PUBLIC_IP], "internal.example.com": ["10.0.0.5"]}
    fetcher, _ = make_fetcher(handler, table)
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch("http://img.example.com/x.png")
    assert requested == ["http://img.example.com/x.png"]


def test_too_many_redirects_fail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        hop = int(request.url.params.get("hop", "0"))
        return httpx.Response(302, headers={"Location": f"/next?hop={hop + 1}"})

    fetcher, resolver = make_fetcher(handler, limits=FetchLimits(max_redirects=2))
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch("http://img.example.com/start")
    assert info.value.details == {"max_redirects": 2}
    assert len(resolver.calls) == 3


def test_redirect_without_location_fails() -> None:
    fetcher, _ = make_fetcher(lambda request: httpx.Response(302))
    with pytest.raises(ImageFetchFailed):
        fetcher.fetch("http://img.example.com/x.png")


@pytest.mark.parametrize("status", [403, 404, 500])
def test_error_status_fails_with_status_in_details(status: int) -> None:
    fetcher, _ = make_fetcher(lambda request: httpx.Response(status, content=b"nope"))
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch("http://img.example.com/x.png")
    assert info.value.details == {"status": status}
    assert str(status) in info.value.message


def test_declared_content_length_over_limit_is_refused_before_reading() -> None:
    body_read = threading.Event()

    def body() -> Iterator[bytes]:
        body_read.set()
        yield b"x" * 10

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "1001"}, content=body())

    fetcher, _ = make_fetcher(handler, limits=FetchLimits(max_bytes=1000))
    with pytest.raises(ImageTooLarge) as info:
        fetcher.fetch("http://img.example.com/x.png")
    assert info.value.details == {"max_bytes": 1000}
    assert not body_read.is_set()


def test_streamed_body_over_limit_is_cut_off() -> None:
    chunks_sent: list[int] = []

    def body() -> Iterator[bytes]:
        for index in range(100):
            chunks_sent.append(index)
            yield b"x" * 400

    def handler(request: httpx.Request) -> httpx.Response:
        response = httpx.Response(200, content=body())
        assert "content-length" not in response.headers
        return response

    fetcher, _ = make_fetcher(handler, limits=FetchLimits(max_bytes=1000))
    with pytest.raises(ImageTooLarge):
        fetcher.fetch("http://img.example.com/x.png")
    assert len(chunks_sent) == 3


def test_body_exactly_at_limit_is_accepted() -> None:
    fetcher, _ = make_fetcher(
        lambda request: httpx.Response(200, content=b"x" * 1000), limits=FetchLimits(max_bytes=1000)
    )
    assert len(fetcher.fetch("http://img.example.com/x.png").data) == 1000


def test_compressed_body_is_refused() -> None:
    fetcher, _ = make_fetcher(
        lambda request: httpx.Response(200, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    )
    with pytest.raises(ImageFetchFailed):
        fetcher.fetch("http://img.example.com/x.png")


@pytest.mark.parametrize(
    ("error", "reason"),
    [(httpx.ReadTimeout("slow"), "timeout"), (httpx.ConnectError("refused"), "network_error")],
)
def test_transport_errors_become_fetch_failures(error: Exception, reason: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    fetcher, _ = make_fetcher(handler)
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch("http://img.example.com/x.png")
    assert info.value.details == {"reason": reason}


def test_overall_deadline_applies_between_chunks() -> None:
    def body() -> Iterator[bytes]:
        for _ in range(20):
            time.sleep(0.05)
            yield b"x"

    fetcher, _ = make_fetcher(
        lambda request: httpx.Response(200, content=body()), limits=FetchLimits(total_timeout=0.2)
    )
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch("http://img.example.com/x.png")
    assert info.value.details == {"reason": "timeout"}


# --- data: URLs ----------------------------------------------------------------------------------


def test_base64_data_url_is_decoded_locally() -> None:
    fetcher, resolver = make_fetcher(lambda request: pytest.fail("no network for data: URLs"))
    encoded = base64.b64encode(IMAGE).decode()
    result = fetcher.fetch(f"data:image/png;base64,{encoded}")
    assert result == FetchedImage(data=IMAGE, content_type="image/png", url="data:")
    # Unpadded and line-wrapped base64, upper-case scheme and parameters are accepted too.
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)).rstrip("=")
    assert fetcher.fetch(f"DATA:Image/PNG;name=x.png;BASE64,{wrapped}").data == IMAGE
    assert resolver.calls == []


def test_percent_encoded_data_url_is_decoded() -> None:
    fetcher, _ = make_fetcher()
    result = fetcher.fetch(f"data:image/svg+xml,{quote('<svg/>')}")
    assert result.data == b"<svg/>"
    assert result.content_type == "image/svg+xml"


@pytest.mark.parametrize(
    "url",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:,hello",
        "data:;base64,aGVsbG8=",
        "data:text/html,<script>alert(1)</script>",
        "data:application/octet-stream;base64,AAAA",
    ],
)
def test_non_image_data_url_is_forbidden(url: str) -> None:
    fetcher, _ = make_fetcher()
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch(url)
    with pytest.raises(ImageURLForbidden):
        check_image_url(url, FetchLimits())


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64", "data:image/png;base64,@@@@", "data:image/png;base64,A", "data:image/png,"],
)
def test_malformed_data_url_is_forbidden(url: str) -> None:
    fetcher, _ = make_fetcher()
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch(url)
    with pytest.raises(ImageURLForbidden):
        check_image_url(url, FetchLimits())


def test_data_url_over_limit_is_too_large() -> None:
    limits = FetchLimits(max_bytes=100)
    fetcher, _ = make_fetcher(limits=limits)
    just_over = "data:image/png;base64," + base64.b64encode(b"x" * 101).decode()
    far_over = "data:image/png," + "x" * 1000
    for url in (just_over, far_over):
        with pytest.raises(ImageTooLarge):
            fetcher.fetch(url)
        with pytest.raises(ImageTooLarge):
            check_image_url(url, limits)
    at_limit = "data:image/png;base64," + base64.b64encode(b"x" * 100).decode()
    assert len(fetcher.fetch(at_limit).data) == 100


# --- check_image_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://img.example.com/photo.jpg",
        "http://img.example.com:80/a/b.png?x=1#frag",
        "https://img.example.com:443/a.png",
        "http://8.8.8.8/x.png",
        "http://[2606:4700::1111]/x.png",
        "http://bücher.example/x.png",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
    ],
)
def test_check_accepts_public_urls(url: str) -> None:
    check_image_url(url, FetchLimits())


@pytest.mark.parametrize("url", ["http://img.example.com:8080/x.png", "https://8.8.8.8:22/x.png",
                                 "http://127.0.0.1:6379/"])  # fmt: skip
def test_only_web_ports_unless_more_are_allowed(url: str) -> None:
    # An allowed network is no exception: its internal services' ports are not image servers.
    with pytest.raises(ImageURLForbidden) as info:
        check_image_url(url, FetchLimits(allowed_networks=LOOPBACK))
    assert info.value.details["allowed_ports"] == [80, 443]
    fetcher, resolver = make_fetcher(limits=FetchLimits(allowed_networks=LOOPBACK))
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch(url)
    assert resolver.calls == []  # refused before any lookup
    port = httpx.URL(url).port
    check_image_url(url, FetchLimits(allowed_networks=LOOPBACK, allowed_ports=frozenset({80, 443, port})))
    check_image_url(url, FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None))


def test_the_port_setting_takes_numbers_or_a_star() -> None:
    assert fetch_limits(Settings()).allowed_ports == {80, 443}
    assert fetch_limits(Settings(fetch_allowed_ports="443, 8443")).allowed_ports == {443, 8443}
    assert fetch_limits(Settings(fetch_allowed_ports="*")).allowed_ports is None
    for bad in ("http", "0", "70000", "\uff18\uff10"):
        with pytest.raises(ValidationError, match="not a port"):
            Settings(fetch_allowed_ports=bad)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://img.example.com/x.png",
        "file:///etc/passwd",
        "gopher://img.example.com:70/_x",
        "javascript:alert(1)",
        "/relative/x.png",
        "",
        "http://user:pass@img.example.com/x.png",
        "http://user@img.example.com/x.png",
        "http:///x.png",
        "http://",
        "http://img.example.com:0/x.png",
        "http://img.example.com:70000/x.png",
        "http://[::1/x.png",
        "https://img.example.com/" + "a" * 8200,
    ],
)
def test_check_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ImageURLForbidden):
        check_image_url(url, FetchLimits())
    fetcher, resolver = make_fetcher()
    with pytest.raises(ImageURLForbidden):
        fetcher.fetch(url)
    assert resolver.calls == []


def test_check_does_not_resolve_hostnames(monkeypatch: pytest.MonkeyPatch) -> None:
    # Hostnames are judged at fetch time, when they are resolved and pinned: a submit makes no DNS query.
    looked_up: list[object] = []

    def getaddrinfo(*args: object, **kwargs: object) -> list[object]:
        looked_up.append(args)
        raise socket.gaierror("no DNS in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "gethostbyname", getaddrinfo)
    check_image_url("http://definitely-not-resolvable.invalid/x.png", FetchLimits())
    check_image_url("http://images.example.com/x.png", FetchLimits())
    assert looked_up == []


# --- image_filename_stem --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "stem"),
    [
        ("https://x/y/photo.jpg?x=1", "photo"),
        ("https://x/y/archive.tar.gz", "archive.tar"),
        ("https://x/y/no-extension", "no-extension"),
        ("https://x/y/my%20cat%20(2).png", "my_cat_2"),
        ("https://x/y/", "image"),
        ("https://x", "image"),
        ("https://x/../..", "image"),
        ("https://x/y/.hidden", "hidden"),
        ("https://x/y/фото.jpg", "image"),
        ("https://x/y/%2e%2e%2fetc%2fpasswd", "passwd"),
        ("data:image/png;base64,AAAA", "image"),
        ("https://x/" + "a" * 300 + ".png", "a" * 100),
        ("http://[::1", "image"),
    ],
)
def test_image_filename_stem(url: str, stem: str) -> None:
    assert image_filename_stem(url) == stem


# --- the real pinned transport against a local server --------------------------------------------


class _ImageServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ImageHandler)
        self.release = threading.Event()
        self.hosts: list[str | None] = []


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    server: _ImageServer

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers["Host"])
        try:
            if self.path == "/slow.png":
                self.server.release.wait(2.0)
            elif self.path == "/stall.png":
                self._send_headers(length=len(IMAGE))
                for part in (IMAGE[:10], IMAGE[10:20]):
                    self.wfile.write(part)
                    self.wfile.flush()
                    if self.server.release.wait(STALL_PAUSE):
                        return
                self.server.release.wait(2.0)
                return
            self._send_headers(length=len(IMAGE))
            self.wfile.write(IMAGE)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on purpose

    def _send_headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[_ImageServer]:
    server = _ImageServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


def _server_url(server: _ImageServer, path: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{server.server_address[1]}{path}"


def test_real_transport_fetches_from_allowed_loopback(image_server: _ImageServer) -> None:
    url = _server_url(image_server, "/photo.png")
    result = ImageFetcher(FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None)).fetch(url)
    assert result == FetchedImage(data=IMAGE, content_type="image/png", url=url)


def test_real_transport_refuses_loopback_by_default(image_server: _ImageServer) -> None:
    with pytest.raises(ImageURLForbidden):
        ImageFetcher(FetchLimits()).fetch(_server_url(image_server, "/photo.png"))
    assert image_server.hosts == []


def test_real_transport_connects_to_pinned_address_with_original_host(image_server: _ImageServer) -> None:
    # "images.invalid" cannot resolve in real DNS: the fetch only works if the transport dials the
    # address the resolver returned, while still sending the original Host header.
    resolver = FakeResolver({"images.invalid": ["127.0.0.1"]})
    fetcher = ImageFetcher(FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None), resolver=resolver)
    url = _server_url(image_server, "/photo.png", host="images.invalid")
    assert fetcher.fetch(url).data == IMAGE
    assert resolver.calls == [("images.invalid", image_server.server_address[1])]
    assert image_server.hosts == [f"images.invalid:{image_server.server_address[1]}"]


@pytest.fixture
def read_timeouts(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The timeout of every socket read the real transport makes, in order."""
    seen: list[float | None] = []
    real_read = httpcore._backends.sync.SyncStream.read

    def read(stream: Any, max_bytes: int, timeout: float | None = None) -> bytes:
        seen.append(timeout)
        return real_read(stream, max_bytes, timeout)

    monkeypatch.setattr(httpcore._backends.sync.SyncStream, "read", read)
    return seen


def test_real_transport_read_timeout(image_server: _ImageServer, read_timeouts: list[float | None]) -> None:
    fetcher = ImageFetcher(
        FetchLimits(connect_timeout=1.0, read_timeout=0.2, allowed_networks=LOOPBACK, allowed_ports=None)
    )
    with pytest.raises(ImageFetchFailed) as info:
        fetcher.fetch(_server_url(image_server, "/slow.png"))
    assert info.value.details == {"reason": "timeout"}
    assert read_timeouts and all(timeout is not None and timeout <= 0.2 for timeout in read_timeouts)


class Interrupted(Exception):
    pass


def test_a_checkpoint_interrupts_a_download_that_waits(image_server: _ImageServer) -> None:
    # /slow.png answers after 2 s, well within the read timeout: only the checkpoint can end it sooner.
    limits = FetchLimits(read_timeout=10.0, allowed_networks=LOOPBACK, allowed_ports=None)
    calls: list[None] = []

    def checkpoint() -> None:
        calls.append(None)
        raise Interrupted  # as the runner's lease checkpoint does for a canceled job

    with pytest.raises(Interrupted):
        ImageFetcher(limits).fetch(_server_url(image_server, "/slow.png"), checkpoint)
    assert len(calls) == 1
    # Data that flows never waits a whole slice: the checkpoint is not called at all.
    assert ImageFetcher(limits).fetch(_server_url(image_server, "/photo.png"), checkpoint).data == IMAGE
    assert len(calls) == 1


def test_real_transport_overall_deadline_shortens_a_blocked_read(
    image_server: _ImageServer, read_timeouts: list[float | None]
) -> None:
    # Body bytes come at 0 s and 0.6 s, then stop. The read that starts at 0.6 s would wait out the
    # 0.8 s read timeout (until 1.4 s); the overall deadline must cut its timeout to what is left of 1 s.
    limits = FetchLimits(read_timeout=0.8, total_timeout=1.0, allowed_networks=LOOPBACK, allowed_ports=None)
    with pytest.raises(ImageFetchFailed) as info:
        ImageFetcher(limits).fetch(_server_url(image_server, "/stall.png"))
    assert info.value.details == {"reason": "timeout"}
    assert all(timeout is not None and timeout <= 0.8 for timeout in read_timeouts)
    assert read_timeouts[-1] is not None and read_timeouts[-1] < 0.8 - 0.3  # 0.6 s of the 1 s were spent


def test_real_transport_connection_refused_fails_cleanly() -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), _ImageHandler) as closed:
        port = closed.server_address[1]
    with pytest.raises(ImageFetchFailed) as info:
        ImageFetcher(FetchLimits(allowed_networks=LOOPBACK, allowed_ports=None)).fetch(
            f"http://127.0.0.1:{port}/x.png"
        )
    assert info.value.details == {"reason": "network_error"}
