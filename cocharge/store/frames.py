"""The frame log's rows (stations/framelog.py writes them): a station's frames of one flush
in a row, as JSON [[ts, direction, frame], ...]; read back one by one, each with an id that
grows with time (the row's id * FRAMES_PER_ROW + `skip` + its place in the row)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cocharge.store.schema import FRAMES_PER_ROW, frame_chunks


@dataclass(frozen=True)
class Frame:
    """One kept frame (or note about the connection)."""

    id: int
    ts: datetime  # naive UTC, as the store's times
    direction: str  # in | out | note
    frame: str


def pack(frames: Sequence[Sequence[Any]]) -> str:
    """A row's `frames` text: [[ts, direction, frame], ...]."""
    try:
        return orjson.dumps(frames).decode()
    except orjson.JSONEncodeError:  # a text orjson will not take (a lone surrogate): escaped
        return json.dumps([[at.isoformat() if isinstance(at, datetime) else at, d, f]
                           for at, d, f in frames])


def _loads(text: str) -> list[list[str]]:
    try:
        loaded: list[list[str]] = orjson.loads(text)
    except orjson.JSONDecodeError:  # written by pack's fallback
        loaded = json.loads(text)
    return loaded


def unpack(row: Any) -> list[Frame]:
    """The frames of one row, with their ids."""
    first = row.id * FRAMES_PER_ROW + row.skip
    return [Frame(first + n, datetime.fromisoformat(at), direction, frame)
            for n, (at, direction, frame) in enumerate(_loads(row.frames))]


async def read_frames(conn: AsyncConnection, station_id: str, limit: int | None = None,
                      after: int | None = None, since: datetime | None = None) -> list[Frame]:
    """The station's kept frames, oldest first: the last `limit`, those with an id above
    `after`, those from `since` on."""
    query = select(frame_chunks).where(frame_chunks.c.station_id == station_id)
    if after is not None:
        query = query.where(frame_chunks.c.id >= after // FRAMES_PER_ROW)
    if since is not None:
        query = query.where(frame_chunks.c.last_ts >= since)
    if limit is None:
        rows = list((await conn.execute(query.order_by(frame_chunks.c.id))).all())
    else:  # every row holds a frame at least; only the oldest read may be filtered below
        rows = list(reversed((await conn.execute(
            query.order_by(frame_chunks.c.id.desc()).limit(limit))).all()))
    frames = [f for row in rows for f in unpack(row)
              if (after is None or f.id > after) and (since is None or f.ts >= since)]
    return frames if limit is None else frames[-limit:] if limit > 0 else []


async def count_frames(conn: AsyncConnection, station_id: str) -> int:
    return int(await conn.scalar(select(func.coalesce(func.sum(frame_chunks.c.size), 0)).where(
        frame_chunks.c.station_id == station_id)) or 0)


async def keep_last(conn: AsyncConnection, station_id: str, keep: int) -> None:
    """Delete the station's rows older than its last `keep` frames; the row that holds the
    boundary loses the frames before it (the rest keep their ids)."""
    rows = (await conn.execute(select(frame_chunks.c.id, frame_chunks.c.size).where(
        frame_chunks.c.station_id == station_id).order_by(frame_chunks.c.id.desc()))).all()
    total = 0
    for place, (row_id, size) in enumerate(rows):
        total += size
        if total < keep:
            continue
        if place + 1 < len(rows):
            await conn.execute(delete(frame_chunks).where(
                frame_chunks.c.station_id == station_id, frame_chunks.c.id < row_id))
        excess = total - keep
        if excess:
            row = (await conn.execute(select(frame_chunks).where(
                frame_chunks.c.id == row_id))).one()
            frames = _loads(row.frames)[excess:]
            await conn.execute(update(frame_chunks).where(frame_chunks.c.id == row_id).values(
                skip=row.skip + excess, size=len(frames),
                first_ts=datetime.fromisoformat(frames[0][0]), frames=pack(frames)))
        return
