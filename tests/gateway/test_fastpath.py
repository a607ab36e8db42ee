"""Whole single text frames are read and written the short way (gateway/fastpath.py), with
the result websockets' own connection gives: every case runs against both, over real
sockets, from a client that writes the bytes of each frame itself (whole frames, two in one
write, a frame in pieces, sizes across the length encodings, fragmented messages, pings,
and frames a server must refuse), read by a loop as a station's is (recv_text where the
connection has it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from cocharge.gateway.fastpath import FastConnection

MAX_SIZE = 70_000
TEXT, CONT, BINARY, CLOSE, PING, PONG = 0x1, 0x0, 0x2, 0x8, 0x9, 0xA


class _General(ServerConnection):
    """Counts the chunks that went websockets' own way."""

    general = 0

    def data_received(self, data: bytes) -> None:
        type(self).general += 1
        super().data_received(data)


class _Fast(FastConnection, _General):
    general = 0


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True,
          rsv: int = 0) -> bytes:
    """A client's frame, as the bytes on the wire."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def write(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()

    async def read(self) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload)."""
        async with asyncio.timeout(10):
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return first & 0x0F, await self.reader.readexactly(size)

    async def closed_with(self) -> int:
        """The close code the server sends."""
        while True:
            opcode, payload = await self.read()
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])


async def _upgrade(server: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to `server`, upgraded to WebSocket by hand."""
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 b"Sec-WebSocket-Version: 13\r\n\r\n")
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return reader, writer


@contextlib.asynccontextmanager
async def held() -> AsyncIterator[tuple[Any, asyncio.StreamWriter]]:
    """(the server's fast connection, nobody reading it, the client's writer)."""
    handed: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()

    async def keep(ws: Any) -> None:
        await handed.put(ws)
        await done.wait()

    server = await serve(keep, "127.0.0.1", 0, compression=None, create_connection=_Fast)
    _reader, writer = await _upgrade(server)
    try:
        yield await asyncio.wait_for(handed.get(), 10), writer
    finally:
        done.set()
        writer.close()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def connected(kind: type[ServerConnection]) -> AsyncIterator[Client]:
    """A client of an echo server whose connections are of `kind`."""

    async def echo(ws: Any) -> None:  # read as a station's loop reads (recv_text where it is)
        recv = getattr(ws, "recv_text", ws.recv)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.send(await recv())

    server = await serve(echo, "127.0.0.1", 0, compression=None, max_size=MAX_SIZE,
                         create_connection=kind)
    reader, writer = await _upgrade(server)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


BOTH = pytest.mark.parametrize("kind", [_General, _Fast], ids=["websockets", "fast"])


@BOTH
async def test_whole_frames_of_every_length_encoding_are_echoed(kind) -> None:
    async with connected(kind) as client:
        for size in (0, 1, 125, 126, 1000, 65535, 65536):
            text = ("é" * size)[:size // 2] + "x" * (size - 2 * (size // 2))
            body = text.encode()
            await client.write(frame(TEXT, body))
            assert await client.read() == (TEXT, body), size


async def test_the_fast_connection_takes_whole_frames_without_websockets_parser() -> None:
    async with connected(_Fast) as client:
        await client.write(frame(TEXT, b"[2,\"1\",\"Heartbeat\",{}]"))
        assert (await client.read())[1] == b"[2,\"1\",\"Heartbeat\",{}]"
        before = _Fast.general
        for n in range(20):
            body = f'[2,"{n}","MeterValues",{{"connectorId":1}}]'.encode() + b" " * (n * 20)
            await client.write(frame(TEXT, body))
            assert await client.read() == (TEXT, body)
        assert _Fast.general == before  # none of them went websockets' own way
        await client.write(frame(TEXT, b"a") + frame(TEXT, b"b"))  # two frames, one read
        assert [await client.read(), await client.read()] == [(TEXT, b"a"), (TEXT, b"b")]


@BOTH
async def test_frames_in_pieces_and_together_arrive_whole_and_in_order(kind) -> None:
    async with connected(kind) as client:
        whole = frame(TEXT, b'[2,"7","Heartbeat",{}]')
        for cut in range(1, len(whole)):
            await client.write(whole[:cut])
            await asyncio.sleep(0.002)
            await client.write(whole[cut:])
            assert await client.read() == (TEXT, b'[2,"7","Heartbeat",{}]'), cut
        half = frame(TEXT, b"half")
        await client.write(b"".join(frame(TEXT, str(n).encode()) for n in range(5)) + half[:3])
        for n in range(5):
            assert await client.read() == (TEXT, str(n).encode())
        await client.write(half[3:])
        assert await client.read() == (TEXT, b"half")


@BOTH
async def test_fragmented_messages_pings_and_binary_frames_go_as_before(kind) -> None:
    async with connected(kind) as client:
        await client.write(frame(TEXT, b"[2,", fin=False), frame(CONT, b'"1",', fin=False),
                           frame(CONT, b'"Heartbeat",{}]'))
        assert await client.read() == (TEXT, b'[2,"1","Heartbeat",{}]')
        await client.write(frame(PING, b"are you there"))
        assert await client.read() == (PONG, b"are you there")
        await client.write(frame(BINARY, b"\x00\x01"))
        assert await client.read() == (BINARY, b"\x00\x01")
        await client.write(frame(TEXT, b"after"))
        assert await client.read() == (TEXT, b"after")


@BOTH
@pytest.mark.parametrize("bad, code", [
    (frame(TEXT, b"\xff\xfe not UTF-8"), 1007),
    (frame(TEXT, b"unmasked", masked=False), 1002),
    (frame(TEXT, b"x" * (MAX_SIZE + 1)), 1009),
    (frame(TEXT, b"reserved bit", rsv=0x40), 1002),
    (frame(CONT, b"a continuation of nothing"), 1002),
], ids=["utf8", "unmasked", "too-big", "rsv", "lone-continuation"])
async def test_frames_a_server_must_refuse_close_the_connection_alike(kind, bad, code) -> None:
    async with connected(kind) as client:
        await client.write(frame(TEXT, b"fine"))
        assert await client.read() == (TEXT, b"fine")
        await client.write(bad)
        assert await client.closed_with() == code


@BOTH
async def test_a_text_frame_inside_a_fragmented_message_is_refused_alike(kind) -> None:
    async with connected(kind) as client:
        await client.write(frame(TEXT, b"[2,", fin=False))
        await asyncio.sleep(0.01)
        await client.write(frame(TEXT, b"a whole frame where a continuation belongs"))
        assert await client.closed_with() == 1002


async def test_a_reader_cancelled_after_a_frame_was_handed_to_it_loses_nothing() -> None:
    """The station's loop is cancelled (its connection taken over, say) in the turn in which
    a frame was handed to it: the next reader gets that frame."""
    async with held() as (ws, writer):
        reading = asyncio.ensure_future(ws.recv_text())
        await asyncio.sleep(0)  # it waits now
        assert ws._waiter is not None
        ws.data_received(frame(TEXT, b'[2,"1","Heartbeat",{}]'))  # as the socket would
        reading.cancel()  # before it could take it
        with pytest.raises(asyncio.CancelledError):
            await reading
        assert await asyncio.wait_for(ws.recv_text(), 5) == '[2,"1","Heartbeat",{}]'
        writer.write(frame(TEXT, b"next"))
        assert await asyncio.wait_for(ws.recv_text(), 5) == "next"


async def test_a_reader_waiting_when_the_connection_ends_is_told_it_is_closed() -> None:
    async with held() as (ws, writer):
        reading = asyncio.ensure_future(ws.recv_text())
        await asyncio.sleep(0)
        writer.transport.abort()  # the charger's connection drops
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(reading, 10)
