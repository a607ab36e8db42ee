"""A charger's answers are written at once while the connection takes them (send_now), and
through websockets' own send() otherwise: when the charger does not read (the buffer is full:
send() waits for it) and when the connection is closing (send() says it is closed)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from cocharge.gateway.fastpath import send_now


@contextlib.asynccontextmanager
async def _pair() -> AsyncIterator[tuple[Any, Any]]:
    """(client, the server's connection to it), over a real socket."""
    accepted: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(ws: Any) -> None:
        await accepted.put(ws)
        await done.wait()

    server = await serve(handler, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    client = await connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None)
    try:
        yield client, await accepted.get()
    finally:
        done.set()
        await client.close()
        server.close()
        await server.wait_closed()


async def test_an_open_connection_takes_the_frame_at_once() -> None:
    async with _pair() as (client, ws):
        assert await send_now(ws, '[3,"1",{}]')
        assert await send_now(ws, '[3,"2",{"currentTime":"2026-12-05T10:00:00Z"}]')
        assert await asyncio.wait_for(client.recv(), 5) == '[3,"1",{}]'
        assert await asyncio.wait_for(client.recv(), 5) == (
            '[3,"2",{"currentTime":"2026-12-05T10:00:00Z"}]')
        # Written as one frame straight to the socket (gateway/fastpath.py) in each of the
        # three length encodings: what websockets' client reads is the text sent.
        for size in (0, 125, 126, 65535, 65536, 200_000):
            text = "é" * (size // 2) + "x" * (size % 2)
            assert await send_now(ws, text)
            assert await asyncio.wait_for(client.recv(), 5) == text


async def test_a_charger_that_does_not_read_gets_send_which_waits() -> None:
    async with _pair() as (client, ws):
        client.transport.pause_reading()  # the charger stops reading
        frame = "x" * 65536
        sent = 0
        while await send_now(ws, frame):  # until the server's buffer is over its limit
            sent += 1
            await asyncio.sleep(0)
            assert sent < 2_000, "the write buffer never filled"
        assert ws.paused
        waiting = asyncio.ensure_future(ws.send(frame))  # what _send does next: it waits
        await asyncio.sleep(0.2)
        assert not waiting.done()
        client.transport.resume_reading()
        await asyncio.wait_for(waiting, 10)
        for _ in range(sent + 1):  # nothing lost, in order
            assert await asyncio.wait_for(client.recv(), 10) == frame


async def test_a_closing_connection_is_left_to_send_which_says_it_is_closed() -> None:
    async with _pair() as (client, ws):
        await client.close()
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert not await send_now(ws, '[3,"1",{}]')
        with pytest.raises(ConnectionClosed):
            await ws.send('[3,"1",{}]')
