"""Fetching media from URLs: the one fetcher, under one policy, for every URL smolsight reads.

The rules, whoever calls: only data URIs and http(s) URLs (never a path by surprise); an
optional host allow-list; hosts that resolve to loopback, private or link-local addresses
refused unless the policy allows them; the connection pinned to the address that was checked
(so a second DNS answer cannot point elsewhere); redirects not followed (they could lead
anywhere); one total deadline for connecting and reading (a host dripping a byte at a time
cannot hold a request); a size cap. The CLI's policy allows private addresses (a camera on the
user's own network is the common case); the server's refuses them unless told otherwise.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import LimitError, MediaError

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    """Whether and where media URLs may be fetched."""

    allow_fetch: bool = True
    allow_list: tuple[str, ...] = ()  # exact host names; empty means any host
    allow_private: bool = True  # loopback, private, link-local and other non-public addresses
    max_bytes: int = 256 * 1024 * 1024
    timeout_s: float = 20.0  # for the whole fetch: connecting, waiting and reading


LOCAL_USER = UrlPolicy()  # a person on their own machine: CLI and library calls


def describe(src: object) -> str:
    """A short name for an input, for error messages (never dumps a whole base64 string)."""
    if isinstance(src, (str, Path)):
        text = str(src)
        return text if len(text) <= 80 else text[:60] + "…"
    if isinstance(src, bytes):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def fetch(url: str, policy: UrlPolicy) -> bytes:
    """Bytes of a data URI or, if the policy allows it, of an http(s) URL; anything else is refused."""
    if url.startswith("data:"):
        return decode_data_uri(url)
    if not url.startswith(("http://", "https://")):
        raise MediaError(f"{describe(url)}: media must be a data URI (data:image/png;base64,…) or an http(s) URL")
    if not policy.allow_fetch:
        raise MediaError(f"{describe(url)}: this server does not fetch URLs; send the media as a data URI")
    deadline = time.monotonic() + policy.timeout_s
    parts, address = check_url(url, policy)
    return http_get(parts, parts.port, address, policy, deadline, url)


def check_url(url: str, policy: UrlPolicy):
    """(the URL's parts, the checked address to connect to): the host rules of the policy, for
    any scheme (a camera's rtsp:// URL is held to the same allow-list as an image's)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise MediaError(f"{describe(url)}: malformed URL ({exc})") from None
    if not host:
        raise MediaError(f"{describe(url)}: URL has no host")
    if policy.allow_list and host.lower() not in policy.allow_list:
        raise MediaError(f"{describe(url)}: host {host!r} is not on the URL allow-list")
    return parts, resolve_checked(host, policy.allow_private, url)


def open_stream(url: str, policy: UrlPolicy) -> tuple[str, Iterator[bytes]]:
    """(content type, body chunks) of an http(s) URL that never ends, such as a camera's MJPEG
    stream: the policy's host rules and pinned address, `policy.timeout_s` for connecting and
    for each read (not for the whole body); the caller closes the iterator."""
    if not url.startswith(("http://", "https://")):
        raise MediaError(f"{describe(url)}: a stream must be an http(s) URL")
    parts, address = check_url(url, policy)
    connection, _ = pinned_connection(parts, parts.port, address, lambda: policy.timeout_s)
    path = parts.path or "/"
    try:
        connection.request("GET", f"{path}?{parts.query}" if parts.query else path, headers={"User-Agent": "smolsight"})
        response = connection.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise MediaError(f"{describe(url)}: could not be opened ({exc})") from None
    if response.status != 200:
        connection.close()
        raise MediaError(f"{describe(url)}: the server answered HTTP {response.status} (redirects are not followed)")
    return response.getheader("Content-Type", ""), stream_chunks(connection, response, url)


def stream_chunks(connection, response, url: str) -> Iterator[bytes]:
    try:
        while chunk := response.read1(CHUNK_BYTES):
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(f"{describe(url)}: the stream broke off ({exc})") from None
    finally:
        connection.close()


def pinned_connection(parts, port: int | None, address: str, left):
    """(an HTTP(S) connection to the checked `address` whatever DNS answers later, the list its
    socket lands in): TLS still checks the host name; `left()` gives each step's timeout. The
    connection drops its reference to the socket once a response is read; the list keeps one."""
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname, port, timeout=left())
    sockets = []

    def pinned(addr, timeout, *args):
        sockets.append(socket.create_connection((address, addr[1]), left(), *args))
        return sockets[-1]

    connection._create_connection = pinned
    return connection, sockets


def resolve_checked(host: str, allow_private: bool, url: str) -> str:
    """One address of `host`, refusing hosts with any non-public address unless allowed."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError(f"{describe(url)}: host {host!r} cannot be resolved ({exc})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise MediaError(f"{describe(url)}: {host} resolves to the non-public address {address}, which is not fetched from")
    return addresses[0]


def http_get(parts, port: int | None, address: str, policy: UrlPolicy, deadline: float, url: str) -> bytes:
    """GET over a connection pinned to the checked address, within the deadline."""

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise MediaError(f"{describe(url)}: not fetched within {policy.timeout_s:g} s")
        return remaining

    connection, sockets = pinned_connection(parts, port, address, left)
    path = parts.path or "/"
    try:
        connection.request("GET", f"{path}?{parts.query}" if parts.query else path, headers={"User-Agent": "smolsight"})
        response = connection.getresponse()
        if response.status != 200:
            raise MediaError(f"{describe(url)}: the server answered HTTP {response.status} (redirects are not followed)")
        data = bytearray()
        while len(data) <= policy.max_bytes:
            sockets[0].settimeout(left())
            chunk = response.read1(CHUNK_BYTES)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise MediaError(f"{describe(url)}: not fetched within {policy.timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise MediaError(f"{describe(url)}: could not be fetched ({exc})") from None
    finally:
        connection.close()
    if len(data) > policy.max_bytes:
        raise LimitError(f"{describe(url)}: larger than {policy.max_bytes} bytes")
    return bytes(data)


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or ";base64" not in header:
        raise MediaError(f"{describe(uri)}: only base64 data URIs are supported (data:<type>;base64,...)")
    return decode_base64(payload, describe(uri))


def decode_base64(payload: str, name: str) -> bytes:
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{name}: not valid base64") from None
