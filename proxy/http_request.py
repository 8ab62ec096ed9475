"""The request side of the provider client (proxy.http_client): the request head, made once per
URL, and the header block, checked so that no header can split the request."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec


class InvalidRequestHeader(ConnectionError):
    """A header for the provider holds a line break or NUL (never sent: it would split the request)."""


class Target(msgspec.Struct, frozen=True):
    key: tuple[str, int, bool]  # the pool: host, port, TLS
    host: str
    port: int
    tls: bool
    head: bytes  # request line, Host and User-Agent


class UnusableURL(OSError):
    """A provider URL the client cannot call (snapshots are validated, so only a bug gets here): the
    attempt fails as that backend's fault, and the next backend is tried."""


def parse_target(url: str, user_agent: str) -> Target:
    try:
        return _parse_target(url, user_agent)
    except (ValueError, UnicodeError) as exc:  # urlsplit, a port out of range, a non-ASCII host
        raise UnusableURL(f"the provider URL cannot be used: {type(exc).__name__}") from None


def _parse_target(url: str, user_agent: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    tls = parts.scheme == "https"
    default_port = 443 if tls else 80
    port = parts.port or default_port
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host  # IPv6 literal
    if port != default_port:
        host_header = f"{host_header}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # identity: LLM answers are small and streamed; compressing them costs both ends CPU and can hold
    # back stream events (gzip and deflate are still decoded should a provider send them anyway)
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host_header}\r\nuser-agent: {user_agent}\r\naccept-encoding: identity\r\n"
    ).encode("ascii")
    return Target(key=(host, port, tls), host=host, port=port, tls=tls, head=head)


_SET_HERE = frozenset({"host", "content-length", "user-agent", "transfer-encoding", "accept-encoding"})


def header_block(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if name.lower() in _SET_HERE:
            continue  # the client's own: a second copy would be refused or, worse, obeyed
        if "\n" in value or "\r" in value or "\0" in value or "\n" in name or "\r" in name:
            # never echo the value: it may be a credential
            raise InvalidRequestHeader(f"header {name.strip()!r} holds a line break or NUL")
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidRequestHeader("a header holds characters HTTP/1.1 headers cannot carry") from None
