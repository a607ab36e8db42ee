"""Where stations upload the diagnostics and logs an operator asked for.

It also serves the firmware images of `cocharge firmware add` (GET /firmware/<id>).

`cocharge remote get-diagnostics` / `get-log` give the station a URL of this endpoint with a
one-time token: `http://HOST:9002/upload/<token>` (`https://` when `serve` has a TLS certificate) (the station may add a file name). The
station sends the file with HTTP PUT, or POST (raw or multipart/form-data, as OCPP leaves
it open); it is stored with its request (`log_uploads`) and listed by `cocharge logs`. FTP,
which OCPP also allows, is not offered. A token takes one file; an unknown or used token,
a body over `upload_max_bytes`, or a request that takes longer than `upload_timeout_s` is
refused and nothing is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import logging
import re
import ssl
from typing import Any
from urllib.parse import unquote

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.config import GatewaySettings
from cocharge.store.db import utcnow
from cocharge.store.schema import firmware_files, log_uploads

log = logging.getLogger(__name__)

_PATH = re.compile(r"^/upload/([A-Za-z0-9_-]{16,64})(?:/([^/?#]{1,255}))?/?(?:\?.*)?$")
_FIRMWARE = re.compile(r"^/firmware/([0-9]{1,18})(?:/[^/?#]{0,255})?(?:\?.*)?$")
_MAX_HEADERS = 100


class UploadRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UploadServer:
    def __init__(self, engine: AsyncEngine, settings: GatewaySettings,
                 tls: ssl.SSLContext | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.tls = tls  # the gateway's certificate: HTTPS when the chargers' port is TLS
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.settings.host, self.settings.upload_port, limit=16 * 1024,
            ssl=self.tls, reuse_port=self.settings.reuse_port or None)
        log.info("upload endpoint for diagnostics, logs and firmware on %s:%d (%s)",
                 self.settings.host, self.port, "HTTPS" if self.tls else "HTTP")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, reason = 200, "stored"
        download: bytes | None = None
        try:
            async with asyncio.timeout(self.settings.upload_timeout_s):
                download = await self._receive(reader)
        except UploadRefused as refused:
            status, reason = refused.status, refused.reason
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError):
            status, reason = 400, "malformed or incomplete upload"
        if status != 200:
            log.warning("upload refused (%d): %s", status, reason)
        body = download if download is not None else (reason + "\n").encode()
        kind = "application/octet-stream" if download is not None else "text/plain"
        with contextlib.suppress(ConnectionError):
            writer.write(f"HTTP/1.1 {status} {'OK' if status == 200 else 'Refused'}\r\n"
                         f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _firmware(self, path: str) -> bytes:
        """GET /firmware/<id>[/<name>]: a firmware image of `cocharge firmware add`."""
        match = _FIRMWARE.match(path)
        if match is None:
            raise UploadRefused(404, "no such file")
        async with self.engine.connect() as conn:
            content = await conn.scalar(select(firmware_files.c.content).where(
                firmware_files.c.id == int(match.group(1))))
        if content is None:
            raise UploadRefused(404, "no such firmware file")
        return bytes(content)

    async def _receive(self, reader: asyncio.StreamReader) -> bytes | None:
        line = (await reader.readuntil(b"\r\n")).decode("latin-1").strip()
        method, _, rest = line.partition(" ")
        path = rest.rpartition(" ")[0] or rest
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = (await reader.readuntil(b"\r\n")).decode("latin-1")
            if raw == "\r\n":
                break
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise UploadRefused(431, "too many header lines")
        if method == "GET":
            return await self._firmware(path)
        if method not in ("PUT", "POST"):
            raise UploadRefused(405, "upload with PUT or POST")
        match = _PATH.match(path)
        if match is None:
            raise UploadRefused(404, "no such upload")
        token, name = match.group(1), unquote(match.group(2) or "")
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(log_uploads.c.id, log_uploads.c.station_id)
                                      .where(and_(log_uploads.c.token == token,
                                                  log_uploads.c.received_at.is_(None))))).first()
        if row is None:
            raise UploadRefused(404, "no such upload (unknown or already used token)")
        body = await self._body(reader, headers)
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body, name = _first_file(headers["content-type"], body, name)
        now = utcnow()
        async with self.engine.begin() as conn:
            done = await conn.execute(update(log_uploads).where(and_(
                log_uploads.c.id == row.id, log_uploads.c.received_at.is_(None))).values(
                content=body, size=len(body), received_at=now, updated_at=now,
                **({"filename": name[:255]} if name else {})))
            if done.rowcount == 0:
                raise UploadRefused(409, "this upload arrived already")
        log.info("station %s uploaded %d bytes for request %s", row.station_id, len(body), row.id)
        return None

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        limit = self.settings.upload_max_bytes
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                length = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if length == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(chunks)
                size += length
                if size > limit:
                    raise UploadRefused(413, f"larger than {limit} bytes")
                chunks.append(await reader.readexactly(length))
                await reader.readexactly(2)
        if "content-length" not in headers:
            raise UploadRefused(411, "give Content-Length or chunked transfer encoding")
        length = int(headers["content-length"])
        if length < 0 or length > limit:
            raise UploadRefused(413, f"larger than {limit} bytes")
        return await reader.readexactly(length)


def _first_file(content_type: str, body: bytes, name: str) -> tuple[bytes, str]:
    """The first file of a multipart/form-data body (or its first part)."""
    message: Any = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if not parts:
        raise UploadRefused(400, "multipart body without parts")
    part = next((p for p in parts if p.get_filename()), parts[0])
    return part.get_payload(decode=True) or b"", part.get_filename() or name
