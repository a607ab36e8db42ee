"""The WebSocket frames of a charger's everyday messages, read and written without the
general machinery of `websockets` around them.

A charger's call is one small text frame, and so is our answer. `websockets` parses every
incoming frame through a chain of generators (a buffer, a parser coroutine, the frame's own
parse and checks, a list of events) and writes every outgoing one through its Sans-I/O
protocol's list of pending writes. Both are kept for anything out of the ordinary; the plain
case is done here, with the same result:

- `FastConnection.data_received`: a chunk read from the socket that is exactly one whole,
  unfragmented, masked text frame within the size limit, on an open connection with nothing
  half-read before it, goes to the connection's message queue as the frame `websockets`
  would have parsed (UTF-8 is checked where it always is, when the message is taken).
  Anything else (two frames in one read, half a frame, a ping, a close, a binary or
  fragmented message, a frame too big, an unmasked one) goes through `websockets` as before.
- `recv_text`: a station's loop waiting for its next message is handed such a frame's text
  at once (not through the message queue, its frames and its decoding); anything else, or a
  message already queued, comes from `recv()` as before.
- `send_now`: our answer, while the connection is open and takes it, written at once (as
  the one frame `websockets` would have serialized, when its protocol has nothing queued);
  a frame that has to wait, or meets a closing connection, is left to websockets' `send()`.

Measured on a saturated node (benchmarks/fleet.py --baseline), in docs/architecture.md. The
attributes used are those of websockets 17; a connection without them takes the general way.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN

try:  # the C version websockets itself uses, where it is built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

_TEXT_FIN = 0x81  # FIN, no RSV bits (no extension is ever negotiated), opcode text
_SHORT = [bytes((_TEXT_FIN, n)) for n in range(126)]


class FastConnection(ServerConnection):
    """websockets' server connection, with whole single text frames taken the short way."""

    _waiter: asyncio.Future[str | None] | None = None

    async def recv_text(self) -> str | bytes:
        """The next message, as `recv()` gives it, for a reader of one message at a time: a
        whole text frame that arrives while it waits is handed to it as its text."""
        assembler = self.recv_messages
        if len(assembler.frames) or assembler.get_in_progress or self.protocol.state is not OPEN:
            queued: str | bytes = await self.recv()
            return queued
        waiter: asyncio.Future[str | None] = self.loop.create_future()
        self._waiter = waiter
        try:
            text = await waiter
        except asyncio.CancelledError:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:  # handed over, then cancelled before it was read: kept
                assembler.frames.put_back([Frame(Opcode.TEXT, handed.encode())])
            raise
        finally:
            self._waiter = None
        if text is None:  # something else came (or the connection ended): websockets says
            message: str | bytes = await self.recv()
            return message
        return text

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        size = len(data)
        if (size > 5 and data[0] == _TEXT_FIN and protocol.state is OPEN
                and not protocol.reader.buffer and protocol.current_size is None
                and not protocol.extensions and not protocol.debug):
            length = data[1] ^ 0x80  # the mask bit a client must set; unset: >= 128
            start = 6
            if length == 126 and size > 7:
                length, start = (data[2] << 8) | data[3], 8
            limit = protocol.max_message_size
            fragment = protocol.max_fragment_size
            if (length < 126 or start == 8) and size == start + length and (
                    limit is None or length <= limit) and (
                    fragment is None or length <= fragment):
                payload = apply_mask(data[start:], data[start - 4:start])
                waiter = self._waiter
                if waiter is not None and not waiter.done():
                    try:
                        waiter.set_result(payload.decode())
                        return
                    except UnicodeDecodeError:
                        pass  # to the queue: taking it raises, as websockets does
                self.recv_messages.put(Frame(Opcode.TEXT, payload))
                self._wake()
                return
        super().data_received(data)
        self._wake()


async def send_now(websocket: Any, frame: str) -> bool:
    """Write a text frame at once, as websockets' own `send()` does when nothing stands in its
    way (the connection open, its write buffer below the limit, no fragmented message going
    out), without the context manager and the drain that `send()` goes through for every
    frame: 11-13% of a saturated node's CPU per MeterValues (benchmarks/fleet.py --baseline).
    With nothing of the protocol's own queued before it, the frame goes straight to the
    transport, serialized as websockets would (a server's frames are not masked).
    False: nothing sent; `send()` then waits for the buffer or raises ConnectionClosed (and
    a connection without these attributes, of a websockets other than the one measured, 17,
    always gets False)."""
    protocol = getattr(websocket, "protocol", None)
    if (protocol is None or protocol.state is not OPEN or getattr(websocket, "paused", True)
            or getattr(websocket, "send_in_progress", False) is not None
            or websocket.transport.is_closing()):
        return False
    payload = frame.encode()
    try:
        if protocol.writes or protocol.extensions or protocol.debug:
            protocol.send_text(payload)
            websocket.send_data()
        else:
            size = len(payload)
            header = (_SHORT[size] if size < 126
                      else struct.pack("!BBH", _TEXT_FIN, 126, size) if size < 65536
                      else struct.pack("!BBQ", _TEXT_FIN, 127, size))
            websocket.transport.write(header + payload)
    except Exception as exc:  # as send() does: the connection is broken; closed, and said so
        websocket.set_connection_exc(exc)
        websocket.transport.abort()
        await asyncio.shield(websocket.connection_lost_waiter)
        raise websocket.close_exc from exc
    return True
