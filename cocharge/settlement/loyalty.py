"""Rewards on the ledger: the stored rule table, credit, coins, badges, green certificates,
green-point orders and their releases, and the points pool (SPEC §4).

Every reward is a ledger transfer in its own asset, so it is idempotent (each id once),
auditable and checked by `ledger verify`:

  COIN      rewards:coins   -> coins:<tag>
  CREDIT    rewards:credit <-> credit:<tag>      (first: credit-init:<tag>, the initial score)
  BADGE     rewards:badges  -> badge:<tag>       (1 per badge, id badge:<tag>:<key>)
  GREEN_WH  green:issued    -> green:<tag>       (one per certificate, memo = its digest)
  GREEN_PT  rewards:green   -> greenpt-locked:<tag>:<order> -> greenpt:<tag>
  POOL_PT   pool:issuer     -> poolpt:<tag>      (burnt back when sold)
  CNY       external:sales -> platform (a sale) -> pool:reserve (its margin share),
            pool:reserve -> wallet:<tag> (a sell);
            platform -> dividend:pool -> wallet:<tag>, the rest back to platform (dividends)

The rules themselves are pure (`rewards`, `points`); this module reads the facts, posts
the transfers and keeps the few rows the ledger cannot (rule versions, applied events,
certificates, orders, release days).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, desc, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocharge.settlement import ledger, memberships, points
from cocharge.settlement.ledger import Transfer
from cocharge.settlement.rewards import (
    DEFAULT_RULES,
    DEFAULTS,
    PERIODS,
    BadgeRule,
    Earned,
    Reward,
    Rules,
    SessionFacts,
    co2_grams,
    credit_change,
    parse_rules,
    session_rewards,
    with_change,
)
from cocharge.store.db import GENESIS_HASH, utcnow
from cocharge.store.schema import (
    charge_groups,
    dividend_days,
    green_certificates,
    ledger_balances,
    ledger_transfers,
    members,
    point_orders,
    point_release_days,
    reward_events,
    reward_rules,
    sessions,
    settlements,
)

COIN, CREDIT, BADGE, GREEN_WH, GREEN_PT, POOL_PT = (
    "COIN", "CREDIT", "BADGE", "GREEN_WH", "GREEN_PT", "POOL_PT")
TZ = "Asia/Shanghai"


class RewardsError(ValueError):
    """A rewards request that cannot apply; nothing was written. The message says why."""


# --- the rule table -------------------------------------------------------------------------

async def current_rules(conn: AsyncConnection) -> Rules:
    row = (await conn.execute(select(reward_rules).order_by(desc(reward_rules.c.version))
                              .limit(1))).first()
    if row is None:
        return DEFAULTS
    return parse_rules(json.loads(row.body), int(row.version))


async def load_rules(engine: AsyncEngine) -> Rules:
    async with engine.connect() as conn:
        return await current_rules(conn)


async def set_rule(engine: AsyncEngine, key: str, value: str) -> Rules:
    """Change one rule; stored as a new version of the whole table."""
    async with engine.begin() as conn:
        rules = await current_rules(conn)
        body = with_change(rules.body or DEFAULT_RULES, key, value)
        version = rules.version + 1
        await conn.execute(insert(reward_rules).values(
            version=version, body=json.dumps(body, sort_keys=True),
            changed=f"{key} = {value}"[:200], created_at=utcnow()))
    return parse_rules(body, version)


async def rules_history(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(reward_rules.c.version, reward_rules.c.changed,
                                          reward_rules.c.created_at).order_by(reward_rules.c.version))).all()
    return [{"version": r.version, "changed": r.changed,
             "at": r.created_at.isoformat(timespec="seconds") + "Z"} for r in rows]


# --- credit, coins, badges: a batch of reward legs -------------------------------------------

async def _credit_state(conn: AsyncConnection, tag: str, rules: Rules | None) -> tuple[int, bool]:
    """(score, whether the initial score is on the ledger yet)."""
    if await ledger.posted(conn, f"credit-init:{tag}"):
        return await ledger.balance(conn, f"credit:{tag}", CREDIT), True
    return (rules or await current_rules(conn)).initial_credit, False


async def credit_score(conn: AsyncConnection, tag: str, rules: Rules | None = None) -> int:
    """The member's credit: the initial score until the first credit event, then the ledger."""
    return (await _credit_state(conn, tag, rules))[0]


@dataclass
class RewardBatch:
    """Reward legs for one ledger batch, keeping each member's credit as it changes."""

    rules: Rules
    legs: list[Transfer] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    free_days: list[tuple[str, int, str]] = field(default_factory=list)  # (tag, days, ref)
    _credit: dict[str, int] = field(default_factory=dict)

    async def _score(self, conn: AsyncConnection, tag: str) -> int:
        if tag not in self._credit:
            self._credit[tag], on_ledger = await _credit_state(conn, tag, self.rules)
            if not on_ledger and self.rules.initial_credit > 0:
                self.legs.append(Transfer(f"credit-init:{tag}", "rewards:credit", f"credit:{tag}",
                                          self.rules.initial_credit, CREDIT, "credit-initial",
                                          None, "initial credit score"))
        return self._credit[tag]

    async def reward(self, conn: AsyncConnection, tag: str, event: str, event_id: str,
                     reward: Reward, ref: str | None) -> None:
        coins = reward.coins
        credit = credit_change(await self._score(conn, tag), reward.credit)
        self._credit[tag] += credit
        if coins:
            self.legs.append(Transfer(f"{event_id}:coins", "rewards:coins", f"coins:{tag}", coins,
                                      COIN, "reward", ref, event))
        if credit > 0:
            self.legs.append(Transfer(f"{event_id}:credit", "rewards:credit", f"credit:{tag}", credit,
                                      CREDIT, "reward", ref, event))
        elif credit < 0:
            self.legs.append(Transfer(f"{event_id}:credit", f"credit:{tag}", "rewards:credit", -credit,
                                      CREDIT, "penalty", ref, event))
        self.events.append({"id": event_id, "tag": tag, "event": event, "ref": ref, "coins": coins,
                            "credit": credit, "rules_version": self.rules.version,
                            "applied_at": utcnow()})

    def badge(self, tag: str, rule: BadgeRule, ref: str | None) -> None:
        """The badge, and what its rule grants with it (coins, free charging days)."""
        self.legs.append(Transfer(f"badge:{tag}:{rule.key}", "rewards:badges", f"badge:{tag}", 1,
                                  BADGE, "badge", ref, rule.name))
        if rule.coins:
            self.legs.append(Transfer(f"badge:{tag}:{rule.key}:coins", "rewards:coins",
                                      f"coins:{tag}", rule.coins, COIN, "reward", ref,
                                      f"badge {rule.name}"))
        if rule.free_days:
            self.free_days.append((tag, rule.free_days, f"badge:{tag}:{rule.key}"))

    async def record(self, conn: AsyncConnection) -> None:
        """Write the applied events (after the legs were posted in the same transaction)."""
        if self.events:
            await conn.execute(insert(reward_events), self.events)
        for tag, days, ref in self.free_days:
            await memberships.reward_days(conn, tag, days, ref, utcnow())


async def badges_of(conn: AsyncConnection, tag: str) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(ledger_transfers.c.id, ledger_transfers.c.memo,
                                      ledger_transfers.c.created_at).where(and_(
        ledger_transfers.c.credit == f"badge:{tag}", ledger_transfers.c.asset == BADGE))
        .order_by(ledger_transfers.c.seq))).all()
    return [{"badge": r.id.rsplit(":", 1)[1], "name": r.memo,
             "at": r.created_at.isoformat(timespec="seconds") + "Z"} for r in rows]


async def _member_exists(conn: AsyncConnection, tag: str) -> None:
    if await conn.scalar(select(members.c.tag).where(members.c.tag == tag)) is None:
        raise RewardsError(f"no member with tag {tag!r}: see `cocharge member list`")


async def event_applied(conn: AsyncConnection, event_id: str) -> bool:
    return await conn.scalar(select(reward_events.c.id).where(reward_events.c.id == event_id)) \
        is not None


@dataclass(frozen=True)
class Applied:
    event_id: str
    new: bool
    coins: int
    credit: int
    credit_after: int
    limited: bool = False                       # over the event's limit: acknowledged, no reward
    badges: tuple[str, ...] = ()


async def apply_event(engine: AsyncEngine, tag: str, event: str, ref: str,
                      now: datetime | None = None) -> Applied:
    """An event reported from outside (an app's post, like, answer...), applied once per id:
    its reward (within the event's limit per period), then any badge its count earns."""
    if not ref or len(ref) > 64:
        raise RewardsError("--ref: give the event's own id (1 to 64 characters), e.g. the post id")
    if event == "oem_activated":
        raise RewardsError("an OEM activation is a membership: `cocharge membership grant TAG "
                           "--brand MAKE --vin VIN` (it gives the starter reward once)")
    now = now or utcnow()
    event_id = f"{event}:{ref}"
    async with engine.begin() as conn:
        await _member_exists(conn, tag)
        await ledger.lock(conn)
        rules = await current_rules(conn)
        if event not in rules.external_events():
            raise RewardsError(f"unknown event {event!r}: one of "
                               f"{', '.join(e for e in rules.external_events() if e != 'oem_activated')}"
                               f" (add one with `cocharge rewards rules set events.{event} coins=N`)")
        done = (await conn.execute(select(reward_events).where(reward_events.c.id == event_id))).first()
        if done is not None:
            if done.tag != tag:
                raise RewardsError(f"event {event_id} was already applied to {done.tag}, not {tag}")
            return Applied(event_id, False, done.coins, done.credit, await credit_score(conn, tag))
        reward = rules.reward(event)
        limited = False
        if reward.limit is not None:
            since = now - timedelta(days=PERIODS[reward.period])
            rewarded = int(await conn.scalar(select(func.count()).select_from(reward_events).where(and_(
                reward_events.c.tag == tag, reward_events.c.event == event,
                reward_events.c.applied_at > since,
                (reward_events.c.coins != 0) | (reward_events.c.credit != 0)))) or 0)
            if rewarded >= reward.limit:
                reward, limited = Reward(), True
        batch = RewardBatch(rules)
        await batch.reward(conn, tag, event, event_id, reward, ref)
        batch.events[-1]["applied_at"] = now
        held = {b["badge"] for b in await badges_of(conn, tag)}
        earned = []
        for rule in rules.badges:
            if rule.measure != "event" or rule.event != event or rule.key in held:
                continue
            query = select(func.count()).select_from(reward_events).where(and_(
                reward_events.c.tag == tag, reward_events.c.event == event))
            if rule.within_days is not None:
                query = query.where(reward_events.c.applied_at > now - timedelta(days=rule.within_days))
            if int(await conn.scalar(query) or 0) + 1 >= rule.threshold:
                batch.badge(tag, rule, event_id)
                earned.append(rule.name)
        if batch.legs:
            await ledger.post(conn, batch.legs, f"event:{event_id}")
        await batch.record(conn)
        return Applied(event_id, True, batch.events[0]["coins"], batch.events[0]["credit"],
                       batch._credit[tag], limited, tuple(earned))


# --- session rewards (called by settlement, inside its transaction) ---------------------------

def certificate_digest(c: dict[str, Any]) -> str:
    canonical = "|".join(str(x) for x in (
        c["id"], c["session_id"], c["tag"], c["station_id"], c["energy_wh"],
        c["started_at"].isoformat(timespec="seconds"), c["ended_at"].isoformat(timespec="seconds"),
        c["co2_g"], c["factor"], c["factor_year"], c["factor_source"]))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _facts(conn: AsyncConnection, row: Any, green: bool) -> SessionFacts:
    tag = row.id_tag
    certs = (await conn.execute(select(func.count(), func.coalesce(func.sum(green_certificates.c.energy_wh), 0))
                                .where(and_(green_certificates.c.tag == tag,
                                            green_certificates.c.session_id != row.id)))).one()
    role = None
    if row.group_id is not None:
        group = (await conn.execute(select(charge_groups.c.status, charge_groups.c.initiator)
                                    .where(charge_groups.c.id == row.group_id))).first()
        if group is not None and group.status == "formed":
            role = "initiator" if group.initiator == tag else "member"
    earlier = (await conn.execute(
        select(sessions.c.group_id, charge_groups.c.status)
        .select_from(settlements.join(sessions, sessions.c.id == settlements.c.session_id)
                     .outerjoin(charge_groups, charge_groups.c.id == sessions.c.group_id))
        .where(and_(settlements.c.payer == tag, settlements.c.session_id < row.id))
        .order_by(desc(settlements.c.session_id)).limit(50))).all()
    streak = 0
    for e in earlier:
        if e.group_id is None or e.status != "formed":
            break
        streak += 1
    visited = (await conn.execute(select(sessions.c.station_id).distinct()
                                  .select_from(settlements.join(sessions, sessions.c.id == settlements.c.session_id))
                                  .where(settlements.c.payer == tag))).scalars().all()
    held = frozenset(b["badge"] for b in await badges_of(conn, tag))
    leads = int(await conn.scalar(select(func.count()).select_from(charge_groups).where(and_(
        charge_groups.c.initiator == tag, charge_groups.c.free_tag == tag,
        charge_groups.c.status == "formed"))) or 0)
    return SessionFacts(tag, row.station_id, int(row.energy_wh or 0), green, role,
                        int(certs[0]), int(certs[1]), streak, frozenset(visited), held, leads,
                        await green_months(conn, tag, row.ended_at or utcnow()))


async def green_months(conn: AsyncConnection, tag: str, at: datetime, months: int = 12
                       ) -> tuple[Decimal, ...]:
    """The member's green share (% of the kWh charged that was green) of each of the
    `months` complete months before `at`'s month, the last first (0 for a month without
    charging)."""
    local = at.replace(tzinfo=UTC).astimezone(ZoneInfo(TZ))
    # The months' starts in UTC, newest first: [this month, last month, ... 12 months ago].
    starts = []
    y, m = local.year, local.month
    for _ in range(months + 1):
        starts.append(datetime(y, m, 1, tzinfo=ZoneInfo(TZ)).astimezone(UTC).replace(tzinfo=None))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)

    async def by_month(when: Any, wh: Any, *where: Any) -> dict[int, int]:
        """Wh per month (1 = last month ...), summed by the database (a fleet's tag can have
        thousands of sessions a year: issue 30's storm found this one by profiling)."""
        month = case(*[(when >= starts[n], n) for n in range(1, months + 1)])
        rows = await conn.execute(select(month, func.sum(wh)).where(and_(
            *where, when >= starts[months], when < starts[0])).group_by(month))
        return {int(n): int(total or 0) for n, total in rows if n is not None}

    total = await by_month(sessions.c.ended_at, sessions.c.energy_wh, sessions.c.id_tag == tag,
                           sessions.c.status == "completed")
    green = await by_month(green_certificates.c.ended_at, green_certificates.c.energy_wh,
                           green_certificates.c.tag == tag)
    return tuple(Decimal(green.get(n, 0) * 100) / total[n] if total.get(n) else Decimal(0)
                 for n in range(1, months + 1))


@dataclass
class SessionRewards:
    batch: RewardBatch
    certificate: dict[str, Any] | None
    earned: list[Earned]

    @property
    def legs(self) -> list[Transfer]:
        return self.batch.legs

    async def record(self, conn: AsyncConnection) -> None:
        await self.batch.record(conn)
        if self.certificate is not None:
            await conn.execute(insert(green_certificates).values(**self.certificate))


async def session_rewards_for(conn: AsyncConnection, row: Any, green: bool, rules: Rules) -> SessionRewards:
    """The certificate, rewards and badges a completed session earns (legs not yet posted)."""
    facts = await _facts(conn, row, green)
    if green and row.green_wh is not None:
        # A PV site measured what the surplus covered: only that is green (load management).
        facts = replace(facts, energy_wh=min(facts.energy_wh, int(row.green_wh)))
    earned = session_rewards(rules, facts)
    batch = RewardBatch(rules)
    ref = str(row.id)
    for e in earned:
        if e.badge is not None:
            batch.badge(facts.tag, e.badge, ref)
        else:
            await batch.reward(conn, facts.tag, e.event, f"s{row.id}:{e.event}", e.reward, ref)
    cert = None
    if green and facts.energy_wh > 0:
        cert = {"id": f"GC-{row.id:06d}", "session_id": int(row.id), "tag": facts.tag,
                "station_id": row.station_id, "energy_wh": facts.energy_wh,
                "started_at": row.started_at.replace(microsecond=0),
                "ended_at": row.ended_at.replace(microsecond=0),
                "co2_g": co2_grams(facts.energy_wh, rules.factor), "factor": str(rules.factor),
                "factor_year": rules.factor_year, "factor_source": rules.factor_source}
        cert["digest"] = certificate_digest(cert)
        cert["issued_at"] = utcnow()
        batch.legs.append(Transfer(f"cert:{cert['id']}", "green:issued", f"green:{facts.tag}",
                                   facts.energy_wh, GREEN_WH, "green-certificate", ref, cert["digest"]))
    return SessionRewards(batch, cert, earned)


async def penalty_legs(conn: AsyncConnection, tag: str, event: str, event_id: str,
                       ref: str | None) -> RewardBatch:
    """An overstay or a booking no-show (a negative credit reward), as legs to post."""
    batch = RewardBatch(await current_rules(conn))
    if await conn.scalar(select(reward_events.c.id).where(reward_events.c.id == event_id)) is None:
        await batch.reward(conn, tag, event, event_id, batch.rules.reward(event), ref)
    return batch


# --- green certificates ---------------------------------------------------------------------

async def certificate(engine: AsyncEngine, cert_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(green_certificates).where(
            green_certificates.c.id == cert_id.upper()))).first()
    if row is None:
        raise RewardsError(f"no green certificate {cert_id!r}: `cocharge member show TAG` lists a member's")
    return dict(row._mapping)


async def certificates_of(conn: AsyncConnection, tag: str) -> list[dict[str, Any]]:
    rows = (await conn.execute(select(green_certificates).where(green_certificates.c.tag == tag)
                               .order_by(green_certificates.c.session_id))).all()
    return [dict(r._mapping) for r in rows]


async def verify_certificate(engine: AsyncEngine, cert_id: str) -> list[tuple[str, bool]]:
    """Each check and whether it holds: the certificate against its own digest, the CO2
    arithmetic, its ledger entry (present, same energy and digest, row not edited), the session."""
    cert = await certificate(engine, cert_id)
    async with engine.connect() as conn:
        entry = (await conn.execute(select(ledger_transfers).where(
            ledger_transfers.c.id == f"cert:{cert['id']}"))).first()
        energy = await conn.scalar(select(sessions.c.energy_wh).where(sessions.c.id == cert["session_id"]))
        prev = None
        if entry is not None:
            prev = await conn.scalar(select(ledger_transfers.c.hash).where(
                ledger_transfers.c.seq == entry.seq - 1)) if entry.seq > 1 else GENESIS_HASH
    checks = [
        ("certificate fields match its digest", certificate_digest(cert) == cert["digest"]),
        ("CO2 = kWh x factor", co2_grams(int(cert["energy_wh"]), Decimal(cert["factor"])) == cert["co2_g"]),
        ("ledger entry present", entry is not None),
    ]
    if entry is not None:
        checks += [
            ("ledger entry carries the digest", entry.memo == cert["digest"]),
            ("ledger entry is for the same kWh and member",
             int(entry.amount) == int(cert["energy_wh"]) and entry.credit == f"green:{cert['tag']}"),
            ("ledger entry unchanged (its hash recomputes, chained to the one before)",
             entry.prev_hash == prev
             and ledger.transfer_hash(entry.prev_hash, int(entry.seq), ledger.hashed_fields(entry)) == entry.hash),
        ]
    checks.append(("the session metered the same kWh", energy is not None and int(energy) == int(cert["energy_wh"])))
    return checks


# --- green points: orders and releases ------------------------------------------------------

def local_day(at: datetime, tz: str = TZ) -> date:
    return at.replace(tzinfo=UTC).astimezone(ZoneInfo(tz)).date()


@dataclass(frozen=True)
class Purchase:
    order_id: int
    new: bool
    amount_fen: int
    multiplier: Decimal
    granted: int
    daily: int


async def purchase(engine: AsyncEngine, tag: str, amount_fen: int, day: date | None = None,
                   ref: str | None = None) -> Purchase:
    """A green-points purchase: the money tops up the wallet; the grant is locked in the order."""
    if amount_fen <= 0:
        raise RewardsError("the amount must be positive")
    async with engine.begin() as conn:
        await _member_exists(conn, tag)
        await ledger.lock(conn)
        if ref is not None:
            old = (await conn.execute(select(point_orders).where(point_orders.c.ref == ref))).first()
            if old is not None:
                if (old.tag, int(old.amount_fen)) != (tag, amount_fen):
                    raise RewardsError(f"order ref {ref!r} was already used for {old.tag} "
                                       f"({old.amount_fen / 100:.2f} CNY)")
                return Purchase(int(old.id), False, amount_fen, Decimal(old.multiplier),
                                int(old.granted), int(old.daily))
        rules = await current_rules(conn)
        mult = points.multiplier(amount_fen, rules.tiers)
        granted = points.grant_units(amount_fen, mult)
        daily = points.daily_units(amount_fen, rules.daily_release_pct)
        today = local_day(utcnow())
        day = day or today
        if day > today:
            raise RewardsError(f"--date {day}: a purchase cannot be dated in the future")
        order_id = int((await conn.execute(insert(point_orders).values(
            tag=tag, amount_fen=amount_fen, multiplier=str(mult), granted=granted, daily=daily,
            purchased_on=day, ref=ref, created_at=utcnow()).returning(point_orders.c.id))).scalar_one())
        legs = [Transfer(f"pp{order_id}:pay", "external:topup", f"wallet:{tag}", amount_fen,
                         "CNY", "topup", str(order_id), "green points purchase")]
        if granted:
            legs.append(Transfer(f"pp{order_id}:grant", "rewards:green",
                                 f"greenpt-locked:{tag}:{order_id}", granted, GREEN_PT,
                                 "points-grant", str(order_id), f"x{mult}"))
        await ledger.post(conn, legs, f"points-order:{order_id}")
    return Purchase(order_id, True, amount_fen, mult, granted, daily)


async def _orders(conn: AsyncConnection, tag: str | None = None) -> list[Any]:
    query = select(point_orders).order_by(point_orders.c.id)
    if tag is not None:
        query = query.where(point_orders.c.tag == tag)
    return list((await conn.execute(query)).all())


async def _locked(conn: AsyncConnection, orders: list[Any]) -> dict[int, int]:
    return {int(o.id): await ledger.balance(conn, f"greenpt-locked:{o.tag}:{o.id}", GREEN_PT)
            for o in orders}


async def referrers(conn: AsyncConnection) -> dict[str, str | None]:
    rows = (await conn.execute(select(members.c.tag, members.c.referred_by)
                               .where(members.c.referred_by.is_not(None)))).all()
    return {r.tag: r.referred_by for r in rows}


@dataclass(frozen=True)
class ReleaseRun:
    day: date
    new: bool
    released: int                     # GREEN_PT units
    by_tag: dict[str, dict[str, int]]  # tag -> {"own": units, "referral": units}


async def release(engine: AsyncEngine, day: date) -> ReleaseRun:
    """Release the day's green points (idempotent per day)."""
    if day > local_day(utcnow()):
        raise RewardsError(f"--date {day}: points are released for days that have come, not ahead")
    async with engine.begin() as conn:
        await ledger.lock(conn)
        done = (await conn.execute(select(point_release_days).where(point_release_days.c.day == day))).first()
        if done is not None:
            return ReleaseRun(day, False, int(done.released), await _released_on(conn, day))
        rules = await current_rules(conn)
        rows = await _orders(conn)
        locked = await _locked(conn, rows)
        orders = [points.Order(int(o.id), o.tag, int(o.amount_fen), int(o.daily), locked[int(o.id)],
                               o.purchased_on) for o in rows]
        releases = points.release_day(day, orders, await referrers(conn), rules.referral_pct)
        legs = []
        for r in releases:
            suffix = "own" if r.generation == 0 else f"g{r.generation}:from{r.source_order}"
            legs.append(Transfer(f"gp:{day.isoformat()}:{r.order_id}:{suffix}",
                                 f"greenpt-locked:{r.tag}:{r.order_id}", f"greenpt:{r.tag}", r.units,
                                 GREEN_PT, "points-release" if r.generation == 0 else "points-referral",
                                 str(r.order_id), day.isoformat()))
        if legs:
            await ledger.post(conn, legs, f"points-release:{day.isoformat()}")
        total = sum(r.units for r in releases)
        await conn.execute(insert(point_release_days).values(
            day=day, released=total, orders=len({r.order_id for r in releases}), run_at=utcnow()))
        return ReleaseRun(day, True, total, await _released_on(conn, day))


async def _released_on(conn: AsyncConnection, day: date) -> dict[str, dict[str, int]]:
    rows = (await conn.execute(select(ledger_transfers.c.credit, ledger_transfers.c.kind,
                                      ledger_transfers.c.amount).where(and_(
        ledger_transfers.c.batch == f"points-release:{day.isoformat()}")))).all()
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"own": 0, "referral": 0})
    for r in rows:
        out[r.credit.split(":", 1)[1]]["own" if r.kind == "points-release" else "referral"] += int(r.amount)
    return dict(out)


async def orders_of(conn: AsyncConnection, tag: str) -> list[dict[str, Any]]:
    rows = await _orders(conn, tag)
    locked = await _locked(conn, rows)
    return [{"order": int(o.id), "purchased_on": o.purchased_on.isoformat(),
             "amount_fen": int(o.amount_fen), "multiplier": o.multiplier, "granted": int(o.granted),
             "daily": int(o.daily), "locked": locked[int(o.id)],
             "released": int(o.granted) - locked[int(o.id)]} for o in rows]


async def redeem_points(engine: AsyncEngine, tag: str, units: int, ref: str, goods: str) -> bool:
    """Released green points spent on goods outside cocharge; once per `ref`. True when new."""
    if units <= 0:
        raise RewardsError("the number of points to redeem must be positive")
    if not ref or len(ref) > 64 or not goods.strip():
        raise RewardsError("give --ref (the shop's order id, 1 to 64 characters) and --for")
    transfer_id = f"redeem:{ref}"
    async with engine.begin() as conn:
        await _member_exists(conn, tag)
        await ledger.lock(conn)
        old = (await conn.execute(select(ledger_transfers).where(
            ledger_transfers.c.id == transfer_id))).first()
        if old is not None:
            if (old.debit, int(old.amount)) != (f"greenpt:{tag}", units):
                raise RewardsError(f"redemption {ref!r} was already used ({old.debit}, "
                                   f"{points.points_text(int(old.amount), points.GREEN_SCALE)} points)")
            return False
        held = await ledger.balance(conn, f"greenpt:{tag}", GREEN_PT)
        if units > held:
            raise RewardsError(f"{tag} has {points.points_text(held, points.GREEN_SCALE)} released "
                               f"points, fewer than {points.points_text(units, points.GREEN_SCALE)}")
        await ledger.post(conn, [Transfer(transfer_id, f"greenpt:{tag}", "redeemed:goods", units,
                                          GREEN_PT, "redeem-goods", ref, goods.strip()[:100])],
                          f"redeem:{ref}")
    return True


# --- pool-backed points ---------------------------------------------------------------------

async def pool_state(conn: AsyncConnection) -> points.Pool:
    return points.Pool(await ledger.balance(conn, "pool:reserve"),
                       -await ledger.balance(conn, "pool:issuer", POOL_PT))


async def pool_summary(engine: AsyncEngine) -> dict[str, Any]:
    """The pool as shown: reserve (fen), points in circulation (POOL_PT units), price text."""
    async with engine.connect() as conn:
        pool, rules = await pool_state(conn), await current_rules(conn)
    return {"reserve_fen": pool.reserve_fen, "circulating": pool.circulating,
            "price": points.price_text(pool.price(rules.initial_price))}


@dataclass(frozen=True)
class PoolMove:
    new: bool
    units: int          # POOL_PT units minted (sale) or burnt (sell)
    fen: int            # CNY into the pool (sale) or paid out (sell)
    price_before: Decimal
    price_after: Decimal


async def pool_sale(engine: AsyncEngine, tag: str, amount_fen: int, ref: str) -> PoolMove:
    """A sale of `amount_fen` to `tag`: the margin share enters the pool, the buyer earns points."""
    if amount_fen <= 0:
        raise RewardsError("the sale amount must be positive")
    async with engine.begin() as conn:
        await _member_exists(conn, tag)
        await ledger.lock(conn)
        rules = await current_rules(conn)
        pool = await pool_state(conn)
        before = pool.price(rules.initial_price)
        paid = (await conn.execute(select(ledger_transfers.c.amount, ledger_transfers.c.memo).where(
            ledger_transfers.c.id == f"pool-sale:{ref}:paid"))).first()
        if paid is not None:
            if (int(paid.amount), paid.memo) != (amount_fen, f"sale to {tag}"):
                raise RewardsError(f"sale ref {ref!r} was already used ({paid.memo}, "
                                   f"{int(paid.amount) / 100:.2f} CNY)")
            minted = await conn.scalar(select(ledger_transfers.c.amount).where(
                ledger_transfers.c.id == f"pool-sale:{ref}:points"))
            return PoolMove(False, int(minted or 0), 0, before, before)
        s = points.sale(pool, amount_fen, rules.margin_share_pct, rules.buyer_share_pct,
                        rules.initial_price)
        # The sale's money comes in to the platform; its margin share goes on into the pool.
        legs = [Transfer(f"pool-sale:{ref}:paid", "external:sales", "platform", amount_fen, "CNY",
                         "sale", ref, f"sale to {tag}")]
        if s.pool_fen:
            legs.append(Transfer(f"pool-sale:{ref}:reserve", "platform", "pool:reserve", s.pool_fen,
                                 "CNY", "pool-contribution", ref, f"sale {amount_fen}"))
        if s.units:
            legs.append(Transfer(f"pool-sale:{ref}:points", "pool:issuer", f"poolpt:{tag}", s.units,
                                 POOL_PT, "pool-points", ref, f"value {s.value_fen}"))
        await ledger.post(conn, legs, f"pool-sale:{ref}")
        after = (await pool_state(conn)).price(rules.initial_price)
    return PoolMove(True, s.units, s.pool_fen, before, after)


async def pool_sell(engine: AsyncEngine, tag: str, units: int, ref: str) -> PoolMove:
    """`tag` sells `units` back: paid at the price minus the fee, from the pool; burnt."""
    if units <= 0:
        raise RewardsError("the number of points to sell must be positive")
    async with engine.begin() as conn:
        await _member_exists(conn, tag)
        await ledger.lock(conn)
        rules = await current_rules(conn)
        held = await ledger.balance(conn, f"poolpt:{tag}", POOL_PT)
        pool = await pool_state(conn)
        before = pool.price(rules.initial_price)
        if await ledger.posted(conn, f"pool-sell:{ref}:burn"):
            return PoolMove(False, units, 0, before, before)
        if units > held:
            raise RewardsError(f"{tag} holds {points.points_text(held, points.POOL_SCALE)} pool points, "
                               f"fewer than {points.points_text(units, points.POOL_SCALE)}")
        payout = points.sell_payout(pool, units, rules.sell_fee_pct)
        legs = [Transfer(f"pool-sell:{ref}:burn", f"poolpt:{tag}", "pool:issuer", units, POOL_PT,
                         "pool-burn", ref)]
        if payout:
            legs.append(Transfer(f"pool-sell:{ref}:pay", "pool:reserve", f"wallet:{tag}", payout,
                                 "CNY", "pool-payout", ref))
        await ledger.post(conn, legs, f"pool-sell:{ref}")
        after = (await pool_state(conn)).price(rules.initial_price)
    return PoolMove(True, units, payout, before, after)


# --- dividend pools -------------------------------------------------------------------------

@dataclass(frozen=True)
class DividendRun:
    day: date
    new: bool
    revenue_fen: int
    pool_fen: int
    payouts: dict[str, int]
    returned_fen: int
    caps: dict[str, int]


def _day_bounds(day: date, tz: str = TZ) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    start = start.replace(tzinfo=None)
    return start, start + timedelta(days=1)


async def dividend(engine: AsyncEngine, day: date, now: datetime | None = None) -> DividendRun:
    """Distribute `day`'s dividend pool (local day): the revenue share of the platform's
    settlement income booked that day, by green points held (locked and released) at the
    time of the run, capped per member at cap_multiple x (what they have paid for charging
    from their wallet) - (dividends they already had)."""
    if day >= local_day(now or utcnow()):
        raise RewardsError(f"--date {day}: a day's dividend is paid once the day is over")
    async with engine.begin() as conn:
        rules = await current_rules(conn)
        if not rules.dividend_enabled:
            raise RewardsError("dividend pools are off; turn them on with "
                               "`cocharge rewards rules set dividend.enabled true`")
        await ledger.lock(conn)
        done = (await conn.execute(select(dividend_days).where(dividend_days.c.day == day))).first()
        if done is not None:
            rows = (await conn.execute(select(ledger_transfers.c.credit, ledger_transfers.c.amount).where(
                and_(ledger_transfers.c.batch == f"dividend:{day.isoformat()}",
                     ledger_transfers.c.kind == "dividend")))).all()
            return DividendRun(day, False, int(done.revenue_fen), int(done.pool_fen),
                               {r.credit.split(":", 1)[1]: int(r.amount) for r in rows},
                               int(done.returned_fen), {})
        start, end = _day_bounds(day)
        revenue = int(await conn.scalar(select(func.coalesce(func.sum(ledger_transfers.c.amount), 0)).where(
            and_(ledger_transfers.c.credit == "platform", ledger_transfers.c.asset == "CNY",
                 ledger_transfers.c.kind.in_(("session-split", "idle-split")),
                 ledger_transfers.c.created_at >= start, ledger_transfers.c.created_at < end))) or 0)
        pool_fen = points.dividend_pool(revenue, rules.dividend_share_pct)
        held = (await conn.execute(select(ledger_balances.c.account, ledger_balances.c.balance).where(
            and_(ledger_balances.c.asset == GREEN_PT, ledger_balances.c.account.like("greenpt%"))))).all()
        weights: dict[str, int] = defaultdict(int)  # locked and released, per member
        for account, units in held:
            weights[account.split(":")[1]] += int(units)
        spent = dict((await conn.execute(
            select(settlements.c.payer, func.sum(settlements.c.paid_fen))
            .where(settlements.c.payer.is_not(None)).group_by(settlements.c.payer))).all())
        had = dict((await conn.execute(
            select(ledger_transfers.c.credit, func.sum(ledger_transfers.c.amount))
            .where(ledger_transfers.c.kind == "dividend").group_by(ledger_transfers.c.credit))).all())
        caps = {tag: max(0, int((Decimal(int(spent.get(tag) or 0)) * rules.dividend_cap_multiple)
                                .to_integral_value(rounding="ROUND_FLOOR"))
                         - int(had.get(f"wallet:{tag}") or 0))
                for tag in weights}
        payouts, returned = points.distribute(pool_fen, {t: w for t, w in weights.items() if w > 0}, caps)
        iso = day.isoformat()
        legs = []
        if pool_fen:
            legs.append(Transfer(f"div:{iso}:in", "platform", "dividend:pool", pool_fen, "CNY",
                                 "dividend-pool", iso, f"{rules.dividend_share_pct}% of {revenue}"))
        legs += [Transfer(f"div:{iso}:{tag}", "dividend:pool", f"wallet:{tag}", fen, "CNY", "dividend", iso)
                 for tag, fen in sorted(payouts.items())]
        if returned:
            legs.append(Transfer(f"div:{iso}:back", "dividend:pool", "platform", returned, "CNY",
                                 "dividend-return", iso, "no member could take it (caps)"))
        if legs:
            await ledger.post(conn, legs, f"dividend:{iso}")
        await conn.execute(insert(dividend_days).values(
            day=day, revenue_fen=revenue, pool_fen=pool_fen, paid_fen=sum(payouts.values()),
            returned_fen=returned, run_at=utcnow()))
    return DividendRun(day, True, revenue, pool_fen, payouts, returned, caps)


# --- a member's rewards ---------------------------------------------------------------------

async def member_rewards(engine: AsyncEngine, tag: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(members).where(members.c.tag == tag))).first()
        if row is None:
            raise RewardsError(f"no member with tag {tag!r}: see `cocharge member list`")
        rules = await current_rules(conn)
        certs = await certificates_of(conn, tag)
        orders = await orders_of(conn, tag)
        events = (await conn.execute(select(reward_events).where(reward_events.c.tag == tag)
                                     .order_by(reward_events.c.applied_at))).all()
        pool = await pool_state(conn)
        pool_units = await ledger.balance(conn, f"poolpt:{tag}", POOL_PT)
        referred = (await conn.execute(select(members.c.tag).where(members.c.referred_by == tag)
                                       .order_by(members.c.tag))).scalars().all()
        return {
            "tag": tag, "name": row.name, "status": row.status, "referred_by": row.referred_by,
            "quota_wh_per_month": await memberships.allowance(conn, tag, utcnow()),
            "quota_left_wh": await memberships.quota_left(conn, tag, utcnow()),
            "memberships": [m for m in await memberships.rows_of(conn, tag)],
            "pay_with": row.pay_with or "",
            "referred": list(referred),
            "credit": await credit_score(conn, tag, rules),
            "coins": await ledger.balance(conn, f"coins:{tag}", COIN),
            "wallet_fen": await ledger.balance(conn, f"wallet:{tag}"),
            "badges": await badges_of(conn, tag),
            "green_certificates": [{"id": c["id"], "kwh": c["energy_wh"] / 1000, "co2_kg": c["co2_g"] / 1000,
                                    "station": c["station_id"]} for c in certs],
            "green_kwh": sum(c["energy_wh"] for c in certs) / 1000,
            "co2_kg": sum(c["co2_g"] for c in certs) / 1000,
            "green_points": {"available": await ledger.balance(conn, f"greenpt:{tag}", GREEN_PT),
                             "locked": sum(o["locked"] for o in orders), "orders": orders},
            "pool_points": pool_units,
            "pool_value_fen": int(Decimal(pool_units) * pool.price(rules.initial_price) * 100
                                  / points.POOL_SCALE),
            "events": [{"event": e.event, "ref": e.ref, "coins": e.coins, "credit": e.credit,
                        "at": e.applied_at.isoformat(timespec="seconds") + "Z"} for e in events],
        }

