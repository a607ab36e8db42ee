"""A member's money at the charger, and money that comes in later (SPEC 13: money states).

What a member may spend before a session starts:

    available = wallet + credit line - owed

`owed` is the member's receivable (sessions its wallet could not pay); the credit line comes
from the rule table's `funds.credit_lines` by credit score (none by default). A session may
start only when `available` reaches the gateway's `start_minimum_fen` (or the member has free
quota left this month); it then runs with `available` as its budget, so the charger stops by
itself at it (offline too: the TxProfile), and what its wallet holds is **held**: moved to
`held:<tag>` at the start (a pending transfer, TigerBeetle's model), taken by settlement for
the real amount with the rest released to the wallet, or voided whole when nothing is billed.

Money that comes in later: a top-up pays what the member owes first, oldest session first;
the hosts' (and property's, operator's, platform's) shares of an owed session wait in
`owed:<account>` ("owed by drivers") and move to the account, where a payout can take
them, only as the driver's money for that session is collected. A payout can therefore
never pay a host money nobody collected.

Prepaid limits (`funds.max_topup_cny`, `funds.max_balance_cny`, 5,000 CNY by default) keep a
wallet within what a named single-purpose prepaid card may hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.settlement import ledger, loyalty
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.money import fmt
from cocharge.settlement.rewards import Rules
from cocharge.store.db import utcnow
from cocharge.store.schema import ledger_transfers, members, sessions
from cocharge.store.sql import among

HOLD = "hold"        # kind of the transfer that holds a session's money
RELEASE = "hold-release"
COLLECTED = "debt-collected"
OWED_SPLIT = "session-owed-split"   # a payee's share of money the driver still owes
SHARE_RELEASED = "share-collected"
# Who pays the promotions (discounts, quotas, free sessions and days, green -10 %, a budget
# cap): the platform, from an account of its own so that its cost shows.
SPONSOR = "promotions:platform"


def brand_sponsor(brand: str) -> str:
    """The account of a carmaker paying its members' free quota (OEM memberships)."""
    return f"promotions:brand:{brand}"


class FundsError(ValueError):
    """A top-up or a refund that cannot apply; nothing was written."""


@dataclass(frozen=True)
class Funds:
    """What a member has at the charger, in fen."""

    wallet_fen: int
    owed_fen: int
    credit_line_fen: int
    quota_wh: int = 0

    @property
    def available_fen(self) -> int:
        return max(0, self.wallet_fen + self.credit_line_fen - self.owed_fen)

    def may_start(self, minimum_fen: int) -> tuple[bool, str]:
        """Whether a session may start, and why not (the reason the charger's refusal carries)."""
        if minimum_fen <= 0 or self.available_fen >= minimum_fen or self.quota_wh > 0:
            return True, ""
        owed = f", owes {fmt(self.owed_fen)}" if self.owed_fen else ""
        line = f", credit line {fmt(self.credit_line_fen)}" if self.credit_line_fen else ""
        return False, (f"not enough money: available {fmt(self.available_fen)} CNY (wallet "
                       f"{fmt(self.wallet_fen)}{line}{owed}); a session needs "
                       f"{fmt(minimum_fen)} CNY: top up the wallet")


def credit_line_fen(rules: Rules, score: int) -> int:
    """The line of the highest band whose score the member reaches (0 below every band)."""
    line = 0
    for minimum, fen in rules.credit_lines:
        if score >= minimum:
            line = fen
    return line


def owed_account(account: str) -> str:
    """Where a payee's share of money still owed by a driver waits."""
    return f"owed:{account}"


async def funds_of(conn: AsyncConnection, tag: str, rules: Rules | None = None,
                   quota_wh: int = 0) -> Funds:
    rules = rules or await loyalty.current_rules(conn)
    wallet = await ledger.balance(conn, f"wallet:{tag}")
    owed = -await ledger.balance(conn, f"receivable:{tag}")
    line = credit_line_fen(rules, await loyalty.credit_score(conn, tag)) if rules.credit_lines else 0
    return Funds(max(0, wallet), max(0, owed), line, quota_wh)


# --- holds -----------------------------------------------------------------------------------

def hold_id(session_id: int) -> str:
    return f"hold:{session_id}"


async def place_hold(conn: AsyncConnection, session_id: int, tag: str, amount_fen: int,
                     at: datetime | None = None) -> int:
    """Hold up to `amount_fen` of the wallet for the session (inside the caller's transaction);
    the amount held (0: nothing in the wallet)."""
    amount = min(amount_fen, max(0, await ledger.balance(conn, f"wallet:{tag}")))
    if amount > 0:
        await ledger.post(conn, [Transfer(hold_id(session_id), f"wallet:{tag}", f"held:{tag}",
                                          amount, kind=HOLD, ref=str(session_id),
                                          memo=f"held for session {session_id}")],
                          hold_id(session_id), at)
    return amount


async def held_for(conn: AsyncConnection, session_id: int) -> int:
    """What is still held for the session (0 when none was placed, or it was settled/voided)."""
    amount = await conn.scalar(select(ledger_transfers.c.amount).where(
        ledger_transfers.c.id == hold_id(session_id)))
    if amount is None or await ledger.posted(conn, f"{hold_id(session_id)}:end"):
        return 0
    return int(amount)


def hold_legs(session_id: int, tag: str, held: int, taken: int) -> list[Transfer]:
    """Settle a hold: `taken` goes to the session's clearing, the rest back to the wallet. The
    last leg is `hold:<id>:end`: once it is posted the hold is over."""
    if held <= 0:
        return []
    end = f"{hold_id(session_id)}:end"
    if taken >= held:
        return [Transfer(end, f"held:{tag}", "clearing:sessions", held, kind="session-payment",
                         ref=str(session_id), memo="paid from the hold")]
    legs = []
    if taken > 0:
        legs.append(Transfer(f"{hold_id(session_id)}:take", f"held:{tag}", "clearing:sessions",
                             taken, kind="session-payment", ref=str(session_id),
                             memo="paid from the hold"))
    legs.append(Transfer(end, f"held:{tag}", f"wallet:{tag}", held - taken, kind=RELEASE,
                         ref=str(session_id), memo="the rest of the hold released"))
    return legs


def shares_of(amount_fen: int, parts: list[tuple[str, int]]) -> list[int]:
    """`amount_fen` shared in proportion to `parts` (largest remainder): adds up to it exactly,
    and never gives a payee more than its part."""
    total = sum(share for _, share in parts)
    if amount_fen <= 0 or total <= 0:
        return [0] * len(parts)
    amount_fen = min(amount_fen, total)
    raw = [share * amount_fen for _, share in parts]
    base = [r // total for r in raw]
    for i in sorted(range(len(parts)), key=lambda i: -(raw[i] % total))[:amount_fen - sum(base)]:
        base[i] += 1
    return base


# --- money that comes in later -----------------------------------------------------------------

@dataclass(frozen=True)
class TopUp:
    applied: bool          # False: this reference was applied before (nothing new)
    amount_fen: int
    debt_paid_fen: int     # of it, what paid the member's receivable
    balance_fen: int       # the wallet afterwards


async def top_up(engine: AsyncEngine, tag: str, amount_fen: int, ref: str,
                 source: str = "external:topup") -> TopUp:
    """Money into a member's wallet (once per `ref`), within the prepaid limits; what the member
    owes is paid from it first, and the payees' shares of those sessions become theirs."""
    async with engine.begin() as conn:
        await ledger.lock(conn)
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise FundsError(f"no member with tag {tag!r}: see `cocharge member list`")
        transfer_id = f"topup:{ref}"
        if await ledger.posted(conn, transfer_id):
            await ledger.post(conn, [Transfer(transfer_id, source, f"wallet:{tag}",
                                                     amount_fen, kind="topup", ref=ref)],
                                     transfer_id)  # the same fields, or LedgerConflict
            return TopUp(False, amount_fen, 0, await ledger.balance(conn, f"wallet:{tag}"))
        rules = await loyalty.current_rules(conn)
        if amount_fen > rules.max_topup_fen:
            raise FundsError(f"a single top-up is at most {fmt(rules.max_topup_fen)} CNY "
                             "(funds.max_topup_cny, the limit of a named prepaid card)")
        wallet = await ledger.balance(conn, f"wallet:{tag}")
        owed = max(0, -await ledger.balance(conn, f"receivable:{tag}"))
        if wallet + max(0, amount_fen - owed) > rules.max_balance_fen:
            raise FundsError(f"the wallet would hold {fmt(wallet + amount_fen - min(owed, amount_fen))} "
                             f"CNY; at most {fmt(rules.max_balance_fen)} CNY (funds.max_balance_cny, "
                             "the limit of a named prepaid card)")
        legs = [Transfer(transfer_id, source, f"wallet:{tag}", amount_fen, kind="topup", ref=ref)]
        paid, collect = await _collection_legs(conn, tag, min(owed, amount_fen), ref)
        await ledger.post(conn, legs + collect, transfer_id)
        return TopUp(True, amount_fen, paid, await ledger.balance(conn, f"wallet:{tag}"))


CAPITAL_SOURCE = "external:capital"


async def add_capital(engine: AsyncEngine, amount_fen: int, ref: str) -> bool:
    """The operator's own money into the platform (once per `ref`): what backs the promises
    it made on top of the money members paid in (points, coins, quotas); the liability
    report counts it as cash. False: this reference was booked before (the same amount)."""
    if amount_fen <= 0:
        raise FundsError(f"{fmt(amount_fen)} CNY: the capital put in is more than 0")
    transfer_id = f"capital:{ref}"
    leg = Transfer(transfer_id, CAPITAL_SOURCE, "platform", amount_fen, kind="capital", ref=ref)
    async with engine.begin() as conn:
        await ledger.lock(conn)
        again = await ledger.posted(conn, transfer_id)
        await ledger.post(conn, [leg], transfer_id)  # again: the same fields, or LedgerConflict
    return not again


# The tag of a driver who pays at the charger (2.1 DirectPayment idToken): no member, no
# wallet of their own beyond what the terminal paid for the session.
CARD_PREFIX = "#DirectPayment:"
CARD_SOURCE = "external:card"


def is_card(tag: str | None) -> bool:
    return bool(tag) and str(tag).startswith(CARD_PREFIX)


class CardError(FundsError):
    """A card payment that cannot be booked (the message says why)."""


@dataclass(frozen=True)
class CardPaid:
    applied: bool          # False: this PSP reference was booked before
    session_id: int
    amount_fen: int
    debt_paid_fen: int     # of it, what paid the session (its payees' shares are theirs)
    left_fen: int          # paid beyond the session's price: kept for a refund


async def card_payment(engine: AsyncEngine, session_id: int | None, psp_ref: str,
                       amount_fen: int, receipt: str | None = None) -> CardPaid:
    """A payment the charger's terminal (or the payment page its QR code opened) settled for a
    card session (2.1 NotifySettlement): `external:card` pays into the session's card
    account, which pays what the session owes; once per PSP reference."""
    if session_id is None:
        raise CardError("the settlement names no transaction of this station")
    if amount_fen < 0:
        raise CardError(f"a settlement of {fmt(amount_fen)} CNY")
    async with engine.begin() as conn:
        await ledger.lock(conn)
        found = (await conn.execute(select(sessions.c.id_tag)
                                    .where(sessions.c.id == session_id))).first()
        if found is None:
            raise CardError(f"no session {session_id}: see `cocharge sessions list`")
        tag = found.id_tag
        if not is_card(tag):
            raise CardError(f"session {session_id} was not paid at the charger "
                            f"(its token is {tag!r}, not DirectPayment)")
        transfer_id = f"card:{psp_ref}"
        leg = Transfer(transfer_id, CARD_SOURCE, f"wallet:{tag}", amount_fen,
                       kind="card-payment", ref=str(session_id), memo=(receipt or "")[:200])
        if await ledger.posted(conn, transfer_id):
            await ledger.post(conn, [leg], transfer_id)  # the same fields, or LedgerConflict
            return CardPaid(False, session_id, amount_fen, 0,
                            await ledger.balance(conn, f"wallet:{tag}"))
        owed = max(0, -await ledger.balance(conn, f"receivable:{tag}"))
        paid, collect = await _collection_legs(conn, str(tag), min(owed, amount_fen),
                                               f"card:{psp_ref}")
        await ledger.post(conn, [leg, *collect], transfer_id)
        return CardPaid(True, session_id, amount_fen, paid,
                        await ledger.balance(conn, f"wallet:{tag}"))


async def _collection_legs(conn: AsyncConnection, tag: str, amount_fen: int, ref: str
                           ) -> tuple[int, list[Transfer]]:
    """Pay the member's owed sessions, oldest first, with up to `amount_fen` of its wallet
    (the caller puts the money there in the same batch); each payee's share of what is
    collected moves from `owed:<payee>` to the payee."""
    if amount_fen <= 0:
        return 0, []
    # What each session (and its overstay) left owed: the receivable legs of its settlement.
    found = (await conn.execute(
        select(ledger_transfers.c.ref, func.sum(ledger_transfers.c.amount).label("owed_fen"))
        .where(and_(ledger_transfers.c.debit == f"receivable:{tag}",
                    ledger_transfers.c.kind.in_(("session-receivable", "idle-receivable"))))
        .group_by(ledger_transfers.c.ref))).all()
    rows = sorted(((int(r.ref), int(r.owed_fen)) for r in found), key=lambda r: r[0])
    left, legs = amount_fen, []
    for sid, owed_fen in rows:
        if left <= 0:
            break
        before = await _collected(conn, sid)
        due = owed_fen - before
        if due <= 0:
            continue
        pay = min(due, left)
        left -= pay
        legs.append(Transfer(f"collect:{sid}:{ref}", f"wallet:{tag}", f"receivable:{tag}", pay,
                             kind=COLLECTED, ref=str(sid), memo=f"debt of session {sid} paid"))
        parts = [(str(r.credit)[len("owed:"):], int(r.amount)) for r in (await conn.execute(
            select(ledger_transfers.c.credit, ledger_transfers.c.amount)
            .where(and_(ledger_transfers.c.kind == OWED_SPLIT, ledger_transfers.c.ref == str(sid)))
            .order_by(ledger_transfers.c.id))).all()]
        owed_total = sum(share for _, share in parts)
        # What each payee would have once `before + pay` is collected, less what `before` gave.
        was, now = shares_of(before, parts), shares_of(min(owed_total, before + pay), parts)
        legs += [Transfer(f"collect:{sid}:{ref}:{i}", owed_account(account), account,
                          now[i] - was[i], kind=SHARE_RELEASED, ref=str(sid),
                          memo=f"collected from the driver for session {sid}")
                 for i, (account, _) in enumerate(parts) if now[i] > was[i]]
    return amount_fen - left, legs


async def collected_for(conn: AsyncConnection, session_ids: list[int]) -> dict[int, int]:
    """What has been collected of each session's debt so far."""
    if not session_ids:
        return {}
    refs = [str(s) for s in session_ids]
    rows = (await conn.execute(
        select(ledger_transfers.c.ref, func.sum(ledger_transfers.c.amount))
        .where(and_(ledger_transfers.c.kind == COLLECTED, among(conn, ledger_transfers.c.ref, refs)))
        .group_by(ledger_transfers.c.ref))).all()
    return {int(ref): int(total) for ref, total in rows}


async def _collected(conn: AsyncConnection, session_id: int) -> int:
    return int(await conn.scalar(select(func.coalesce(func.sum(ledger_transfers.c.amount), 0))
                                 .where(and_(ledger_transfers.c.kind == COLLECTED,
                                             ledger_transfers.c.ref == str(session_id)))) or 0)


async def withdraw(engine: AsyncEngine, tag: str, amount_fen: int | None, ref: str) -> int:
    """A member takes money out of its wallet (a refund of a prepaid card; pool-point sales
    land there too): it waits in `refund:<tag>` for the next payout run, which pays it to the
    member's payee details (`payout payee refund:<tag> ...`). None: the whole balance.
    Refused while the member owes anything (its debts are paid first). Once per `ref`."""
    transfer_id = f"withdraw:{ref}"
    async with engine.begin() as conn:
        await ledger.lock(conn)
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise FundsError(f"no member with tag {tag!r}: see `cocharge member list`")
        done = await conn.scalar(select(ledger_transfers.c.amount).where(
            ledger_transfers.c.id == transfer_id))
        if done is not None:
            return int(done)
        owed = max(0, -await ledger.balance(conn, f"receivable:{tag}"))
        if owed:
            raise FundsError(f"{tag} owes {fmt(owed)} CNY: its wallet pays that first")
        wallet = await ledger.balance(conn, f"wallet:{tag}")
        amount = wallet if amount_fen is None else amount_fen
        if amount <= 0 or amount > wallet:
            raise FundsError(f"the wallet of {tag} holds {fmt(wallet)} CNY: withdraw at most that")
        await ledger.post(conn, [Transfer(transfer_id, f"wallet:{tag}", f"refund:{tag}", amount,
                                          kind="withdrawal", ref=ref,
                                          memo="paid to the member by the next payout run")],
                          transfer_id)
        return amount


async def member_money(engine: AsyncEngine, tag: str) -> dict[str, Any]:
    """What a member sees: wallet, held, owed and what it may spend now."""
    async with engine.connect() as conn:
        if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
            raise FundsError(f"no member with tag {tag!r}: see `cocharge member list`")
        funds = await funds_of(conn, tag)
        held = await ledger.balance(conn, f"held:{tag}")
    return {"wallet_fen": funds.wallet_fen, "held_fen": max(0, held), "owed_fen": funds.owed_fen,
            "credit_line_fen": funds.credit_line_fen, "available_fen": funds.available_fen,
            "at": utcnow().isoformat(timespec="seconds") + "Z"}
