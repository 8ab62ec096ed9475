"""Corporate egress: the forward proxy a provider call goes through, from HTTPS_PROXY / HTTP_PROXY / NO_PROXY.

Read once at start-up (`EgressSettings.from_environ`) and handed to the provider client. An https
provider is reached through a ``CONNECT host:port`` tunnel to the proxy, with TLS to the provider
inside it; an http provider through HTTP_PROXY is sent the request in absolute form. The proxy's
credentials (``http://user:password@proxy:3128``) go only into the Proxy-Authorization header: every
message names the proxy by host and port alone.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import msgspec

MAX_CONNECT_ANSWER_BYTES = 16 * 1024  # the proxy's answer to CONNECT: a status line and a few headers


class ProxyTunnelFailed(ConnectionError):
    """The proxy could not be reached, or refused the tunnel: a connect error of the attempt."""


class ForwardProxy(msgspec.Struct, frozen=True):
    host: str
    port: int
    authorization: str | None = None  # "Basic ..." from the URL's userinfo

    def __repr__(self) -> str:  # never the credentials
        return f"ForwardProxy(host={self.host!r}, port={self.port!r})"

    @property
    def name(self) -> str:
        """How messages name the proxy: host and port, never its credentials."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str, variable: str) -> ForwardProxy:
        if "://" not in url:
            url = f"http://{url}"  # "proxy:3128", as curl takes it
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{variable} is not a proxy URL") from None  # (not echoed: it may hold a password)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{variable} must be an http:// proxy URL with a host")
        authorization = None
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
        return cls(host=parts.hostname, port=port or 80, authorization=authorization)


class _Bypass(msgspec.Struct, frozen=True):
    """NO_PROXY: hosts, domain suffixes, host:port pairs, IPs and CIDR ranges, or "*"."""

    everything: bool = False
    names: tuple[tuple[str, int | None], ...] = ()  # (host or domain suffix, port or any)
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, value: str) -> _Bypass:
        names: list[tuple[str, int | None]] = []
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                return cls(everything=True)
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            host, port = entry, None
            if entry.count(":") == 1 or entry.startswith("["):
                host, _, port_text = entry.rpartition(":")
                port = int(port_text) if port_text.isdigit() else None
            names.append((host.strip("[]").lstrip("*").lstrip("."), port))
        return cls(names=tuple(names), networks=tuple(networks))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        for name, only_port in self.names:
            if (only_port is None or only_port == port) and (host == name or host.endswith("." + name)):
                return True
        if self.networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in network for network in self.networks)
        return False


class EgressSettings(msgspec.Struct, frozen=True):
    """Which proxy, if any, a provider call goes through (none by default: the pod talks to providers)."""

    https_proxy: ForwardProxy | None = None
    http_proxy: ForwardProxy | None = None
    no_proxy: _Bypass = msgspec.field(default_factory=_Bypass)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EgressSettings:
        """From the standard variables, the lower-case form first (as curl and requests read them).

        Raises ValueError, naming the variable, for a URL that is not an http:// proxy."""

        def variable(name: str) -> tuple[str, str] | None:
            for key in (name.lower(), name):
                value = environ.get(key, "").strip()
                if value:
                    return key, value
            return None

        https = variable("HTTPS_PROXY")
        http = variable("HTTP_PROXY")
        bypass = variable("NO_PROXY")
        return cls(
            https_proxy=ForwardProxy.parse(https[1], https[0]) if https else None,
            http_proxy=ForwardProxy.parse(http[1], http[0]) if http else None,
            no_proxy=_Bypass.parse(bypass[1]) if bypass else _Bypass(),
        )

    def proxy_for(self, host: str, port: int, *, tls: bool) -> ForwardProxy | None:
        proxy = self.https_proxy if tls else self.http_proxy
        if proxy is None or self.no_proxy.matches(host, port):
            return None
        return proxy


async def open_tunnel(proxy: ForwardProxy, host: str, port: int, loop: asyncio.AbstractEventLoop) -> socket.socket:
    """A socket to the proxy on which ``CONNECT host:port`` was answered 200: TLS to the provider goes on it."""
    sock = await connect_to(proxy, loop)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n"
        if proxy.authorization is not None:
            request += f"proxy-authorization: {proxy.authorization}\r\n"
        await loop.sock_sendall(sock, (request + "\r\n").encode("ascii"))
        answer = b""
        while b"\r\n\r\n" not in answer:
            if len(answer) > MAX_CONNECT_ANSWER_BYTES:
                raise ProxyTunnelFailed(f"the proxy {proxy.name} answered CONNECT with more than a head")
            data = await loop.sock_recv(sock, 4096)
            if not data:
                raise ProxyTunnelFailed(f"the proxy {proxy.name} closed the connection before answering CONNECT")
            answer += data
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProxyTunnelFailed(f"the proxy {proxy.name} answered CONNECT with something that is not HTTP")
        if parts[1] != "200":
            reason = "".join(ch for ch in parts[2][:80] if ch.isprintable()) if len(parts) > 2 else ""
            raise ProxyTunnelFailed(f"the proxy {proxy.name} refused the tunnel to {authority}: {parts[1]} {reason}")
        if rest:  # nothing may come before the TLS handshake
            raise ProxyTunnelFailed(f"the proxy {proxy.name} sent bytes after its CONNECT answer")
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_to(proxy: ForwardProxy, loop: asyncio.AbstractEventLoop) -> socket.socket:
    """A connected non-blocking socket to the proxy; a failure is ProxyTunnelFailed naming it."""
    try:
        infos = await loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ProxyTunnelFailed(f"the proxy {proxy.name} cannot be resolved ({type(exc).__name__})") from None
    error: OSError | None = None
    for family, kind, protocol, _, address in infos:
        sock = socket.socket(family, kind, protocol)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    reason = type(error).__name__ if error is not None else "no address"
    raise ProxyTunnelFailed(f"the proxy {proxy.name} cannot be reached ({reason})")
