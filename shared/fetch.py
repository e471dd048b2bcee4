"""SSRF-safe image fetching, shared by the API (submit-time checks) and the worker (the download).

Threat model: the image URL comes from an untrusted client and is fetched from inside the operator's
network, so it must never reach loopback, private, link-local (cloud metadata) or otherwise special
addresses, directly, through DNS, through a redirect, or through DNS rebinding between the check
and the connect. For http(s) the fetcher therefore:

1. validates the URL (scheme, no credentials, host, port, length),
2. resolves the host once and refuses if *any* address is special (unless in ``allowed_networks``),
3. connects only to those validated addresses (the "pin"), while the Host header, TLS SNI and
   certificate verification still use the hostname from the URL,
4. follows redirects itself, repeating 1-3 for every hop,
5. streams the body under a byte limit, per-operation timeouts and one overall deadline.

Environment proxies are deliberately ignored: a proxy would resolve the host itself and void the pin.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import httpcore
import httpx

from smartseg.shared.errors import ImageFetchFailed, ImageTooLarge, ImageURLForbidden
from smartseg.shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
# Called at least every CHECK_EVERY_S while a download waits for the network; it raises to interrupt
# the fetch (the runner's lease checkpoint raises when the job was canceled or taken over).
Checkpoint = Callable[[], None]
CHECK_EVERY_S = 1.0

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_TOTAL_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 3

MAX_HTTP_URL_LENGTH = 8 * 1024
HTTP_SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_PORT = 65535
WEB_PORTS = frozenset({80, 443})
ANY_PORT = "*"  # in SMARTSEG_FETCH_ALLOWED_PORTS
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
REQUEST_HEADERS = {
    "User-Agent": "smartseg-image-fetcher/0.1",
    "Accept": "image/*",
    # Compressed bodies would let a small download inflate past the byte limit in one chunk.
    "Accept-Encoding": "identity",
}
IDENTITY_ENCODINGS = frozenset({"", "identity"})

DATA_URL_PREFIX = "data:"
# ``FetchedImage.url`` for data: URLs: the payload itself is not worth repeating.
DATA_URL_LABEL = "data:"
# Percent-encoding at most triples a byte, so a longer payload cannot decode within the limit.
DATA_URL_EXPANSION = 3
IMAGE_MEDIA_TYPE = re.compile(r"image/[a-z0-9][a-z0-9!#$&^_.+-]*")
BASE64_WHITESPACE = re.compile(rb"[\t\n\f\r ]")

# inet_aton() forms such as "2130706433", "0x7f.1" or "127.1": getaddrinfo() turns them into an
# IPv4 address without any DNS, so they must be judged as the address they stand for.
LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
# Well-known NAT64 prefix: on a NAT64 network 64:ff9b::a00:1 reaches 10.0.0.1.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
IPV4_MASK = 0xFFFF_FFFF
# Blocks that Python 3.11's ``is_global`` still reports as global but that reach local networks.
EXTRA_FORBIDDEN_NETWORKS = (ipaddress.IPv6Network("64:ff9b:1::/48"),)  # local-use NAT64, RFC 8215

FILENAME_FALLBACK = "image"
FILENAME_MAX_CHARS = 100
FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
FILENAME_EDGE_CHARS = "._-"


@dataclass(frozen=True)
class FetchLimits:
    """Size, time and network limits for one image fetch."""

    max_bytes: int = DEFAULT_MAX_BYTES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    # CIDRs that may be fetched although special (e.g. "127.0.0.0/8" for the local demo).
    allowed_networks: tuple[str, ...] = ()
    # Ports an image URL may name, on every hop; None: any (an image server on a test port).
    allowed_ports: frozenset[int] | None = WEB_PORTS


def fetch_limits(settings: Settings) -> FetchLimits:
    """The limits the ``SMARTSEG_FETCH_*`` settings ask for."""
    return FetchLimits(
        max_bytes=settings.fetch_max_bytes,
        connect_timeout=settings.fetch_connect_timeout_s,
        read_timeout=settings.fetch_read_timeout_s,
        total_timeout=settings.fetch_total_timeout_s,
        allowed_networks=tuple(settings.fetch_allowed_networks),
        allowed_ports=None
        if ANY_PORT in settings.fetch_allowed_ports
        else frozenset(int(port) for port in settings.fetch_allowed_ports),
    )


@dataclass(frozen=True)
class FetchedImage:
    """The raw bytes of a fetched image."""

    data: bytes
    content_type: str | None
    # Final URL after redirects; DATA_URL_LABEL for data: URLs.
    url: str


def check_image_url(url: str, limits: FetchLimits) -> None:
    """Validate an image URL cheaply at submit time, without DNS or network access.

    Raises ImageURLForbidden for a URL that can never be fetched and ImageTooLarge for a data: URL
    whose payload exceeds ``limits.max_bytes``. Hostnames are judged again, with DNS, when fetched.
    """
    if is_data_url(url):
        _decode_data_url(url, limits.max_bytes)
        return
    parsed = _parse_http_url(url, limits.allowed_ports)
    host = _host_of(parsed)
    literal = _literal_ip(host)
    if literal is not None:
        _refuse_special(host, [literal], _parse_networks(limits.allowed_networks))


def check_webhook_url(url: str, limits: FetchLimits) -> None:
    """A webhook endpoint follows the image URL rules, and must be http(s): ImageURLForbidden if not."""
    if is_data_url(url):
        raise ImageURLForbidden("A webhook URL must be http(s).")
    check_image_url(url, limits)


def image_filename_stem(url: str) -> str:
    """Return a safe file name stem for an image URL: ``https://x/y/photo.jpg?x=1`` -> ``photo``.

    Data URLs and URLs without a usable name give ``"image"``; the result only holds
    ``[A-Za-z0-9._-]``, is at most 100 characters and never starts or ends with ``.``, ``_`` or ``-``.
    """
    if is_data_url(url):
        return FILENAME_FALLBACK
    try:
        path = urlsplit(url).path
    except ValueError:
        return FILENAME_FALLBACK
    name = unquote(path).rsplit("/", 1)[-1]
    stem = FILENAME_UNSAFE.sub("_", PurePosixPath(name).stem if name else "")
    stem = stem.strip(FILENAME_EDGE_CHARS)[:FILENAME_MAX_CHARS].strip(FILENAME_EDGE_CHARS)
    return stem or FILENAME_FALLBACK


class ImageFetcher:
    """Downloads images from http(s) or data: URLs with SSRF protection (see the module docstring).

    ``transport`` replaces the pinned network transport (tests pass ``httpx.MockTransport``); the
    URL, resolver and address checks run either way. ``resolver(host, port)`` returns the host's
    addresses as strings; the default is ``socket.getaddrinfo``. One fetcher is safe to share
    between threads: each fetch builds its own connection pool.
    """

    def __init__(
        self,
        limits: FetchLimits,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._limits = limits
        self._transport = transport
        self._resolver = resolver or _system_resolver
        self._allowed = _parse_networks(limits.allowed_networks)
        # Built once: loading the CA bundle is the slow part. SSL_CERT_* env vars are not read.
        self._ssl_context = httpx.create_ssl_context(trust_env=False) if transport is None else None

    def fetch(self, url: str, checkpoint: Checkpoint | None = None) -> FetchedImage:
        """Fetch an image, raising ImageURLForbidden, ImageFetchFailed or ImageTooLarge, or whatever
        ``checkpoint`` raises: it is called at least every ``CHECK_EVERY_S`` while a read waits."""
        if is_data_url(url):
            content_type, data = _decode_data_url(url, self._limits.max_bytes)
            return FetchedImage(data=data, content_type=content_type, url=DATA_URL_LABEL)
        deadline = time.monotonic() + self._limits.total_timeout
        pins: dict[str, tuple[str, ...]] = {}
        with self._transport_for(pins, deadline, checkpoint) as transport:
            return self._fetch_http(url, transport, pins, deadline)

    def pinned(
        self, url: str, deadline: float
    ) -> tuple[httpx.URL, contextlib.AbstractContextManager[httpx.BaseTransport]]:
        """For one request that is not an image download (a manifest, a webhook): the checked URL, and
        a transport that dials only its host's validated addresses, until ``deadline``."""
        parsed = _parse_http_url(url, self._limits.allowed_ports)
        pins: dict[str, tuple[str, ...]] = {}
        self._pin(parsed, pins)
        return parsed, self._transport_for(pins, deadline)

    def _transport_for(
        self, pins: dict[str, tuple[str, ...]], deadline: float, checkpoint: Checkpoint | None = None
    ) -> contextlib.AbstractContextManager[httpx.BaseTransport]:
        if self._transport is not None:
            return contextlib.nullcontext(self._transport)
        return _PinnedTransport(pins, deadline, self._ssl_context, checkpoint)

    def _pin(self, parsed: httpx.URL, pins: dict[str, tuple[str, ...]]) -> None:
        """The pinned transport connects only to what is recorded here for the URL's host."""
        host = _host_of(parsed)
        pins[host] = self._validated_addresses(host, parsed.port or DEFAULT_PORTS[parsed.scheme])

    def _fetch_http(
        self,
        url: str,
        transport: httpx.BaseTransport,
        pins: dict[str, tuple[str, ...]],
        deadline: float,
    ) -> FetchedImage:
        for _ in range(self._limits.max_redirects + 1):
            parsed = _parse_http_url(url, self._limits.allowed_ports)
            self._pin(parsed, pins)
            request = httpx.Request(
                "GET", parsed, headers=REQUEST_HEADERS, extensions={"timeout": self._timeouts(deadline)}
            )
            with _network_errors(parsed.host):
                response = transport.handle_request(request)
            with contextlib.closing(response):
                location = _redirect_location(response, parsed)
                if location is None:
                    return self._read_body(response, parsed, deadline)
            url = location
        raise ImageFetchFailed(
            f"The image URL redirected more than {self._limits.max_redirects} times.",
            {"max_redirects": self._limits.max_redirects},
        )

    def _validated_addresses(self, host: str, port: int) -> tuple[str, ...]:
        literal = _literal_ip(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = [ipaddress.ip_address(address) for address in self._resolver(host, port)]
            except (OSError, ValueError) as exc:
                raise ImageFetchFailed(
                    f"Could not resolve the image host {host!r}.", {"reason": "dns"}
                ) from exc
            if not addresses:
                raise ImageFetchFailed(f"Could not resolve the image host {host!r}.", {"reason": "dns"})
        _refuse_special(host, addresses, self._allowed)
        return tuple(str(address) for address in addresses)

    def _timeouts(self, deadline: float) -> dict[str, float]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out()
        connect = min(self._limits.connect_timeout, remaining)
        read = min(self._limits.read_timeout, remaining)
        return {"connect": connect, "read": read, "write": read, "pool": connect}

    def _read_body(self, response: httpx.Response, url: httpx.URL, deadline: float) -> FetchedImage:
        status = response.status_code
        if not httpx.codes.is_success(status):
            raise ImageFetchFailed(f"The image server answered HTTP {status}.", {"status": status})
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in IDENTITY_ENCODINGS:
            raise ImageFetchFailed(
                "The image server sent a compressed body although none was requested.",
                {"content_encoding": encoding[:100]},
            )
        max_bytes = self._limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
        chunks: list[bytes] = []
        received = 0
        with _network_errors(url.host):
            # iter_bytes() rather than iter_raw(): identical for the identity encoding checked above,
            # but it also serves bodies a transport has already read (httpx.MockTransport does).
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received > max_bytes:
                    raise _too_large(max_bytes)
                # The pinned transport enforces the deadline inside reads; this covers any transport.
                if time.monotonic() > deadline:
                    raise _timed_out()
                chunks.append(chunk)
        content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        return FetchedImage(data=b"".join(chunks), content_type=content_type or None, url=str(url))


# --- URL and address validation ------------------------------------------------------------------


def read_lines(fetcher: ImageFetcher, url: str, max_bytes: int, read_s: float) -> Iterator[str]:
    """The non-blank lines of a text document (a JSONL manifest), read as a stream, under ``fetcher``'s
    address guard (no redirects); ImageFetchFailed past ``max_bytes`` or ``read_s``, or on a non-2xx."""
    deadline = time.monotonic() + read_s
    parsed, transport_context = fetcher.pinned(url, deadline)
    request = httpx.Request(
        "GET", parsed, headers=REQUEST_HEADERS, extensions={"timeout": fetcher._timeouts(deadline)}
    )
    with transport_context as transport, _network_errors(parsed.host):
        response = transport.handle_request(request)
        with contextlib.closing(response):
            if not httpx.codes.is_success(response.status_code):
                raise ImageFetchFailed(f"The manifest server answered HTTP {response.status_code}.")
            pending, read = b"", 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > max_bytes:
                    raise ImageFetchFailed(
                        f"The manifest is over {max_bytes} bytes.", {"max_bytes": max_bytes}
                    )
                *lines, pending = (pending + chunk).split(b"\n")
                yield from (line.decode("utf-8", "replace") for line in lines if line.strip())
            if pending.strip():
                yield pending.decode("utf-8", "replace")


class GuardedPoster:
    """POSTs under the image fetcher's address guard: webhook deliveries. The URL's host is resolved,
    checked against the same networks and ports, and pinned for the connection; a redirect is not
    followed (its status is the answer). Raises ImageURLForbidden or ImageFetchFailed, whose messages
    say what went wrong."""

    def __init__(
        self,
        limits: FetchLimits,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self._guard = ImageFetcher(limits, transport, resolver)

    def post(self, url: str, content: bytes, headers: dict[str, str], timeout_s: float) -> int:
        """The status code the endpoint answered with, within ``timeout_s`` for the whole exchange."""
        parsed, transport_context = self._guard.pinned(url, time.monotonic() + timeout_s)
        timeouts = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        request = httpx.Request(
            "POST", parsed, headers=headers, content=content, extensions={"timeout": timeouts}
        )
        with transport_context as transport, _network_errors(parsed.host):
            response = transport.handle_request(request)
            response.close()  # the answer's body is not read: a receiver owes us only its status
        return response.status_code


def is_data_url(url: str) -> bool:
    return url[: len(DATA_URL_PREFIX)].lower() == DATA_URL_PREFIX


def _decode_data_url(url: str, max_bytes: int) -> tuple[str, bytes]:
    """Decode ``data:image/...[;base64],...`` into (media type, bytes)."""
    header, comma, payload = url[len(DATA_URL_PREFIX) :].partition(",")
    if not comma:
        raise ImageURLForbidden("Malformed data URL: there is no ',' before the payload.")
    params = [param.strip() for param in header.split(";")]
    media_type = params[0].lower()
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    if not IMAGE_MEDIA_TYPE.fullmatch(media_type):
        raise ImageURLForbidden(
            "A data URL must carry an image/* media type.", {"content_type": media_type[:100]}
        )
    if len(payload) > DATA_URL_EXPANSION * max_bytes:
        raise _too_large(max_bytes)
    data = unquote_to_bytes(payload)
    if is_base64:
        data = BASE64_WHITESPACE.sub(b"", data)
        data += b"=" * (-len(data) % 4)  # padding is optional in data URLs
        try:
            data = base64.b64decode(data, validate=True)
        except binascii.Error as exc:
            raise ImageURLForbidden("Malformed data URL: the payload is not valid base64.") from exc
    if not data:
        raise ImageURLForbidden("Malformed data URL: the payload is empty.")
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return media_type, data


def _parse_http_url(url: str, allowed_ports: frozenset[int] | None) -> httpx.URL:
    """Parse an http(s) URL with the same parser that sends the request, refusing unsafe shapes and ports
    that are not allowed (an internal service's admin port is not an image server)."""
    if len(url) > MAX_HTTP_URL_LENGTH:
        raise ImageURLForbidden(
            f"The image URL is longer than {MAX_HTTP_URL_LENGTH} characters.",
            {"max_length": MAX_HTTP_URL_LENGTH},
        )
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ImageURLForbidden("The image URL is malformed.") from exc
    if parsed.scheme not in HTTP_SCHEMES:
        raise ImageURLForbidden(
            "Only http, https and data: image URLs are allowed.", {"scheme": parsed.scheme[:20]}
        )
    if parsed.userinfo:
        raise ImageURLForbidden("Image URLs must not contain a user name or password.")
    if not parsed.raw_host:
        raise ImageURLForbidden("The image URL has no host.")
    if parsed.port is not None and not 0 < parsed.port <= MAX_PORT:
        raise ImageURLForbidden("The image URL has an invalid port.")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    if allowed_ports is not None and port not in allowed_ports:
        raise ImageURLForbidden(
            f"Images are fetched from ports {', '.join(map(str, sorted(allowed_ports)))} only.",
            {"port": port, "allowed_ports": sorted(allowed_ports)},
        )
    return parsed


def _host_of(url: httpx.URL) -> str:
    # The ASCII (IDNA) form is what httpcore hands the network backend, so pins are keyed by it.
    return url.raw_host.decode("ascii")


def _literal_ip(host: str) -> IPAddress | None:
    """Return the address a host names without DNS (an IP literal or legacy IPv4 form), else None."""
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host)
    if LEGACY_IPV4.fullmatch(host):
        with contextlib.suppress(OSError):
            return ipaddress.IPv4Address(socket.inet_aton(host))
    return None


@functools.lru_cache(maxsize=32)
def _parse_networks(cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _refuse_special(host: str, addresses: Iterable[IPAddress], allowed: tuple[IPNetwork, ...]) -> None:
    # The message names the host the user gave, never the (possibly internal) address it resolved to.
    if any(_is_forbidden(address, allowed) for address in addresses):
        raise ImageURLForbidden(
            f"The image host {host!r} is or resolves to a private, local or reserved address.", {"host": host}
        )


def _is_forbidden(address: IPAddress, allowed: tuple[IPNetwork, ...]) -> bool:
    # An IPv4-mapped address (::ffff:10.0.0.1) reaches the IPv4 host, so it is judged as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return False
    return any(_is_special(candidate) for candidate in (address, *_embedded_ipv4(address)))


def _is_special(address: IPAddress) -> bool:
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address in network for network in EXTRA_FORBIDDEN_NETWORKS)
    )


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 transition address (6to4, Teredo, NAT64) can reach."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.sixtofour] if address.sixtofour is not None else []
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in NAT64_PREFIX:
        embedded.append(ipaddress.IPv4Address(int(address) & IPV4_MASK))
    return embedded


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _redirect_location(response: httpx.Response, current: httpx.URL) -> str | None:
    if response.status_code not in REDIRECT_STATUSES:
        return None
    location = response.headers.get("location")
    if not location:
        raise ImageFetchFailed(
            f"The image server answered HTTP {response.status_code} without a Location.",
            {"status": response.status_code},
        )
    try:
        return str(current.join(location))
    except httpx.InvalidURL as exc:
        raise ImageURLForbidden("The image URL redirected to a malformed URL.") from exc


def _too_large(max_bytes: int) -> ImageTooLarge:
    return ImageTooLarge(f"The image is larger than {max_bytes} bytes.", {"max_bytes": max_bytes})


def _timed_out() -> ImageFetchFailed:
    return ImageFetchFailed("Timed out fetching the image.", {"reason": "timeout"})


@contextlib.contextmanager
def _network_errors(host: str) -> Iterator[None]:
    """Turn httpx transport errors into ImageFetchFailed, naming the URL's host but no address."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise _timed_out() from exc
    except httpx.HTTPError as exc:
        raise ImageFetchFailed(
            f"Could not download the image from {host!r}.", {"reason": "network_error"}
        ) from exc


# --- the pinned transport ------------------------------------------------------------------------


class _PinnedTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool whose network backend only dials pinned addresses.

    httpcore passes the URL's host to ``NetworkBackend.connect_tcp`` and then, for https, calls
    ``start_tls(server_hostname=<that host>)`` on the returned stream, so swapping only the TCP
    connect for a connect to the validated address keeps Host, SNI and certificate checks intact.
    """

    def __init__(
        self,
        pins: Mapping[str, tuple[str, ...]],
        deadline: float,
        ssl_context: ssl.SSLContext | None,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context, network_backend=_PinnedBackend(pins, deadline, checkpoint)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            core_response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=core_response.status,
            headers=core_response.headers,
            stream=_ResponseStream(core_response.stream),  # type: ignore[arg-type]  # sync pool
            extensions=core_response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Re-raise httpcore errors as the httpx errors every transport is expected to raise."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise httpx.TimeoutException(str(exc)) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise httpx.TransportError(str(exc)) from exc


class _PinnedBackend(httpcore.NetworkBackend):
    """Dials the addresses validated for a host instead of resolving it again."""

    def __init__(
        self, pins: Mapping[str, tuple[str, ...]], deadline: float, checkpoint: Checkpoint | None
    ) -> None:
        self._pins = pins
        self._deadline = deadline
        self._checkpoint = checkpoint
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._pins.get(host)
        if not addresses:
            raise httpcore.ConnectError(f"refusing to connect to unvalidated host {host!r}")
        *fallbacks, last = addresses

        def connect(address: str) -> httpcore.NetworkStream:
            stream = self._backend.connect_tcp(
                address,
                port,
                timeout=_remaining(self._deadline, timeout, httpcore.ConnectTimeout),
                local_address=local_address,
                socket_options=socket_options,
            )
            return _DeadlineStream(stream, self._deadline, self._checkpoint)

        # Like socket.create_connection(): try each validated address in resolver order.
        for address in fallbacks:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return connect(address)
        return connect(last)


class _DeadlineStream(httpcore.NetworkStream):
    """Shortens every read/write/TLS timeout so the fetch as a whole ends by the deadline, and waits for
    data in slices of at most ``CHECK_EVERY_S`` with the checkpoint between them, so a cancel does not
    wait for a stalled server's read timeout."""

    def __init__(
        self, stream: httpcore.NetworkStream, deadline: float, checkpoint: Checkpoint | None = None
    ) -> None:
        self._stream = stream
        self._deadline = deadline
        self._checkpoint = checkpoint

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        patience = _remaining(self._deadline, timeout, httpcore.ReadTimeout)
        if self._checkpoint is None:
            return self._stream.read(max_bytes, patience)
        give_up = time.monotonic() + patience
        while True:
            try:  # a timed-out read consumed nothing: the socket can be read again
                return self._stream.read(max_bytes, min(CHECK_EVERY_S, max(0.0, give_up - time.monotonic())))
            except httpcore.ReadTimeout:
                if time.monotonic() >= give_up:
                    raise
            self._checkpoint()

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _remaining(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        remaining = _remaining(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, remaining), self._deadline, self._checkpoint
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _remaining(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the overall fetch deadline has passed")
    return left if timeout is None else min(timeout, left)
