"""Disputes: a member or a payee disagrees with a session's bill or a transfer; an operator
resolves it with a correction (ledger.correct: a reversal and the right transfer, never an
edit) or rejects it, with a note; both are on record with who decided."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge.settlement import ledger
from cocharge.store.db import utcnow
from cocharge.store.schema import disputes, ledger_transfers, sessions


class DisputeError(ValueError):
    """A dispute that cannot be opened or resolved; nothing was written."""


async def open_dispute(engine: AsyncEngine, by: str, subject: str, text: str) -> int:
    """`subject` is "session:<id>" or "transfer:<id>"; returns the dispute's number."""
    kind, _, ref = subject.partition(":")
    if not text.strip() or len(text) > 2000:
        raise DisputeError("say what is wrong (--text, up to 2000 characters)")
    if not by.strip() or len(by) > 120:
        raise DisputeError("--by: who opens it (a member tag or an account), up to 120 characters")
    async with engine.begin() as conn:
        if kind == "session" and ref.isdigit():
            found = await conn.scalar(select(sessions.c.id).where(sessions.c.id == int(ref)))
        elif kind == "transfer" and ref:
            found = await conn.scalar(select(ledger_transfers.c.id)
                                      .where(ledger_transfers.c.id == ref))
        else:
            raise DisputeError(f"{subject!r}: give --session ID or --transfer ID")
        if found is None:
            raise DisputeError(f"no {kind} {ref!r}: see `cocharge sessions list` or "
                               "`cocharge ledger statement`")
        return int((await conn.execute(insert(disputes).values(
            opened_by=by, subject=subject, text=text, status="open", opened_at=utcnow(),
        ).returning(disputes.c.id))).scalar_one())


async def resolve(engine: AsyncEngine, dispute_id: int, actor: str, note: str, *,
                  reject: bool = False, transfer_id: str | None = None,
                  amount: int | None = None, ref: str | None = None) -> dict[str, Any]:
    """Reject the dispute, or resolve it (with a correction of `transfer_id` when given)."""
    if not note.strip():
        raise DisputeError("give --note: how it was decided")
    async with engine.connect() as conn:
        row = (await conn.execute(select(disputes).where(disputes.c.id == dispute_id))).first()
    if row is None:
        raise DisputeError(f"no dispute {dispute_id}: see `cocharge dispute list`")
    if row.status != "open":
        raise DisputeError(f"dispute {dispute_id} is {row.status} already")
    correction = None
    if transfer_id is not None and not reject:
        correction = ref or f"dispute-{dispute_id}"
        await ledger.correct(engine, transfer_id, amount, f"dispute {dispute_id}: {note}", actor,
                             correction)
    async with engine.begin() as conn:
        await conn.execute(update(disputes).where(disputes.c.id == dispute_id).values(
            status="rejected" if reject else "resolved", resolution=note, correction=correction,
            resolved_by=actor, resolved_at=utcnow()))
    return (await list_disputes(engine, dispute_id=dispute_id))[0]


async def list_disputes(engine: AsyncEngine, open_only: bool = False,
                        dispute_id: int | None = None,
                        opened_by: str | None = None) -> list[dict[str, Any]]:
    query = select(disputes).order_by(disputes.c.id)
    if open_only:
        query = query.where(disputes.c.status == "open")
    if dispute_id is not None:
        query = query.where(disputes.c.id == dispute_id)
    if opened_by is not None:
        query = query.where(disputes.c.opened_by == opened_by)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{"id": int(r.id), "by": r.opened_by, "subject": r.subject, "text": r.text,
             "status": r.status, "resolution": r.resolution, "correction": r.correction,
             "resolved_by": r.resolved_by,
             "opened": r.opened_at.isoformat(timespec="seconds") + "Z"} for r in rows]
