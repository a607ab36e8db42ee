"""The charger's real address behind a load balancer or reverse proxy (issue 32 item 4).

Behind HAProxy (TCP mode) every connection comes from the balancer; with `send-proxy-v2`
it first sends a PROXY protocol header (v2 binary, or v1 text) naming the client's address.
Behind an HTTP proxy (nginx) the WebSocket handshake carries `X-Forwarded-For`. Either is
believed only from an address of `trusted_proxies` (addresses or networks, comma-separated):
- from a trusted proxy, a PROXY header (if the connection starts with one) or the
  X-Forwarded-For address is the station's address for password throttling, logs and the
  frame log; a header of LOCAL (the balancer's own health check) keeps the proxy's address;
- from any other address a PROXY header is refused (the connection closed before any HTTP),
  and X-Forwarded-For is ignored: nobody else can claim an address.

Plain listeners only: the header comes before the TLS handshake, which the asyncio server
does before any byte reaches us — behind a balancer that passes TLS through, throttling
counts the balancer's address (docs/operations.md "Several nodes").
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections.abc import Iterable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers

from cocharge.gateway.fastpath import FastConnection

log = logging.getLogger(__name__)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included
V2_MAX_BODY = 2048  # addresses and TLVs: a balancer sends far less

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(ValueError):
    """A PROXY header that cannot be read (the connection is closed)."""


def parse_networks(text: str | None) -> tuple[Network, ...]:
    """`trusted_proxies` ("10.0.0.5, 10.1.0.0/16") as networks; ValueError names a bad one."""
    found = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            found.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {part!r} is not an address or network "
                             "(e.g. 10.0.0.5 or 10.1.0.0/16)") from None
    return tuple(found)


def trusted(host: str | None, networks: Iterable[Network]) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def read_header(data: bytes) -> tuple[tuple[str, int] | None, int] | None:
    """A PROXY header at the start of `data`: (the client's (host, port), or None for a
    LOCAL or an address family without one; the header's length in bytes), None when
    more bytes are needed. Raises ProxyHeaderError for a malformed header."""
    if data.startswith(V2_SIGNATURE):
        if len(data) < 16:
            return None
        version_command, family, length = struct.unpack("!BBH", data[12:16])
        if version_command >> 4 != 2 or version_command & 0x0F > 1:
            raise ProxyHeaderError("PROXY v2: unknown version or command")
        if length > V2_MAX_BODY:
            raise ProxyHeaderError("PROXY v2: header too long")
        if len(data) < 16 + length:
            return None
        body = data[16:16 + length]
        if version_command & 0x0F == 0:  # LOCAL: the balancer's own connection
            return None, 16 + length
        if family >> 4 == 1 and len(body) >= 12:  # AF_INET
            return (str(ipaddress.IPv4Address(body[0:4])),
                    struct.unpack("!H", body[8:10])[0]), 16 + length
        if family >> 4 == 2 and len(body) >= 36:  # AF_INET6
            return (str(ipaddress.IPv6Address(body[0:16])),
                    struct.unpack("!H", body[32:34])[0]), 16 + length
        if family >> 4 in (1, 2):
            raise ProxyHeaderError("PROXY v2: address block too short")
        return None, 16 + length  # UNSPEC or UNIX: no client address to take
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n")
        if end < 0:
            if len(data) >= V1_MAX:
                raise ProxyHeaderError("PROXY v1: no end of line")
            return None
        parts = data[:end].decode("ascii", "replace").split(" ")
        if len(parts) >= 2 and parts[1] == "UNKNOWN":
            return None, end + 2
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyHeaderError("PROXY v1: expected PROXY TCP4|TCP6 src dst sport dport")
        try:
            host = str(ipaddress.ip_address(parts[2]))
            port = int(parts[4])
        except ValueError:
            raise ProxyHeaderError("PROXY v1: bad source address or port") from None
        return (host, port), end + 2
    return None


def may_be_header(data: bytes) -> bool:
    """Could these first bytes still become a PROXY header?"""
    return V2_SIGNATURE.startswith(data[:12]) or V1_PREFIX.startswith(data[:6])


def forwarded_for(headers: Headers, networks: Iterable[Network]) -> str | None:
    """The client's address from X-Forwarded-For: the rightmost hop that is not one of our
    trusted proxies (the ones to its left could be written by anyone)."""
    hops = [h.strip() for value in headers.get_all("X-Forwarded-For")
            for h in value.split(",") if h.strip()]
    networks = tuple(networks)
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return None  # garbage: believe nothing of it
        if not trusted(address, networks):
            return address
    return None


class ProxiedConnection(FastConnection):
    """A WebSocket server connection that reads a PROXY header first (only from a trusted
    proxy) and reports the client's address as its remote address."""

    networks: tuple[Network, ...] = ()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._pending: bytes | None = b""  # None once the start of the stream is decided
        self.client_address: tuple[str, int] | None = None
        self._peer = transport.get_extra_info("peername")

    @property
    def remote_address(self) -> Any:
        return self.client_address or super().remote_address

    @property
    def from_trusted_proxy(self) -> bool:
        return trusted(str(self._peer[0]) if self._peer else None, self.networks)

    def data_received(self, data: bytes) -> None:
        if self._pending is None:
            super().data_received(data)
            return
        data = self._pending + data
        if not may_be_header(data):
            self._pending = None
            super().data_received(data)
            return
        if not self.from_trusted_proxy:
            log.warning("a PROXY header from %s, which is not a trusted proxy: closed",
                        self._peer[0] if self._peer else "?")
            self.transport.abort()
            return
        try:
            found = read_header(data)
        except ProxyHeaderError as exc:
            log.warning("proxy %s: %s: closed", self._peer[0] if self._peer else "?", exc)
            self.transport.abort()
            return
        if found is None:
            self._pending = data  # wait for the rest of the header
            return
        self.client_address, used = found
        self._pending = None
        if len(data) > used:
            super().data_received(data[used:])

    def take_forwarded_for(self) -> None:
        """At the handshake: behind an HTTP proxy we trust, X-Forwarded-For names the client."""
        if self.client_address is not None or self.request is None:
            return
        if self.from_trusted_proxy:
            address = forwarded_for(self.request.headers, self.networks)
            if address is not None:
                self.client_address = (address, 0)


def connection_class(networks: tuple[Network, ...]) -> type[ServerConnection]:
    """The connection class for a listener with these trusted proxies (none trusted:
    nothing read before HTTP; gateway/fastpath.py either way)."""
    if not networks:
        return FastConnection
    return type("TrustingConnection", (ProxiedConnection,), {"networks": networks})
