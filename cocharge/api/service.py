"""What the HTTP API and the console can do, for whom: every read and write checks the
caller's role and what it owns before it touches anything.

- operator: everything;
- property: the stations whose split terms name it (`split set --model property --property P`),
  their sessions, bookings and frames, its own account;
- host: the stations it earns from (their owner, or `split set --host H`), the same;
- member: its own sessions, bookings, wallet and rewards; the stations only as a driver sees
  them (online, connectors, power), never their owners, passwords or frames.

A station outside the caller's scope is answered exactly like one that does not exist (404),
so a key cannot find out which stations another property has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from cocharge import views
from cocharge.api.keys import Principal
from cocharge.gateway.operator import OperatorChannel
from cocharge.gateway.server import Gateway
from cocharge.settlement import disputes, funds, settle
from cocharge.stations import registry, sharing
from cocharge.store import audit
from cocharge.store.frames import count_frames, read_frames
from cocharge.store.schema import firmware_targets, stations

# What a host or a property may send to its own chargers; the rest (firmware, certificates,
# network profiles, configuration) stays with the operator.
OWNER_COMMANDS = frozenset({"start", "stop", "unlock", "availability", "reset", "trigger",
                            "share-lock", "get-transaction-status"})
# The ledger accounts a member holds, by kind (`<kind>:<tag>`).
MEMBER_ACCOUNTS = ("wallet", "quota", "credit", "coins", "greenpt", "greenpt-locked", "poolpt")
# Station fields a member (a driver) sees.
PUBLIC_FIELDS = ("id", "online", "connectors", "max_power_kw", "area", "connector_status",
                 "protocol", "lat", "lon", "address")


_WHOLE = 1000  # stations: from this many on, a whole list is read whole, not by their ids
NEAR = 50  # stations on the "near me" list


@dataclass
class StationPage:
    """A page of the station list: its stations, and how many match (and are online) in all."""

    stations: list[dict[str, Any]]
    total: int
    online: int


class ApiError(Exception):
    """A refused request: `status` is its HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}")


def forbidden(what: str) -> ApiError:
    return ApiError(403, f"a {what}")


def refusal(exc: Exception, missing: str) -> ApiError:
    """A registry's refusal as the API answers it: 404 for what does not exist ("no member
    ..."), else 400 with what was wrong."""
    return not_found(missing) if str(exc).startswith("no ") else ApiError(400, str(exc))


def actor(who: Principal) -> str:
    """Who did it, as the audit log says: the key's name and role, and the way it came."""
    return f"{who.role} key {who.name} ({who.via})"


@dataclass
class Api:
    engine: AsyncEngine
    gateway: Gateway
    operator: OperatorChannel

    # --- scope ------------------------------------------------------------------------------

    async def scope(self, who: Principal) -> set[str] | None:
        """The stations `who` manages; None for every station (the operator)."""
        if who.operator:
            return None
        if who.role == "member":
            return set()
        return await views.stations_of(self.engine, who.role, who.owner or "")

    def account(self, who: Principal) -> str | None:
        """The ledger account whose earnings `who` sees (None: the operator sees the gross)."""
        return {"host": f"host:{who.owner}", "property": f"property:{who.owner}",
                "member": f"wallet:{who.owner}"}.get(who.role)

    async def _managed(self, who: Principal, station_id: str) -> None:
        """404 unless `who` manages this station (the operator: any, known or not)."""
        if who.operator or who.role == "member":
            return
        parties = await views.parties(self.engine, [station_id])
        index = 0 if who.role == "host" else 1
        if station_id not in parties or parties[station_id][index] != who.owner:
            raise not_found(f"station {station_id!r}")

    async def _visible(self, who: Principal, station_id: str) -> Any:
        """The station's row if it exists and `who` may see it (a member: any station, as a
        driver sees it); else 404."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(stations.c.id, stations.c.node).where(
                stations.c.id == station_id))).first()
        if row is None:
            raise not_found(f"station {station_id!r}")
        await self._managed(who, station_id)
        return row

    # --- stations ---------------------------------------------------------------------------

    def _online(self, station: dict[str, Any]) -> None:
        """Online from this node's own connections, else from the nodes table (another
        node holds it)."""
        if station["id"] in self.gateway.connections:
            station["online"], station["node"] = True, self.gateway.node_id

    async def _where(self, station_id: str, node: str | None) -> tuple[bool, str | None]:
        """(online, the node holding it) for one station."""
        if station_id in self.gateway.connections:
            return True, self.gateway.node_id
        if node is not None and node in await registry.running_nodes(self.engine):
            return True, node
        return False, None

    async def stations(self, who: Principal, online: bool | None = None,
                       q: str | None = None) -> list[dict[str, Any]]:
        """Every station in `who`'s scope that matches (`station_page`, unpaged)."""
        return (await self.station_page(who, online, q)).stations

    async def station_page(self, who: Principal, online: bool | None = None,
                           q: str | None = None, limit: int | None = None,
                           offset: int = 0) -> StationPage:
        """The stations in `who`'s scope that match `online` and the text `q`, in the order
        of their ids, from `offset`, at most `limit` of them (None: all), with their running
        sessions priced so far; and how many match, and are online, in all. Only the page's
        running sessions are priced: a page of 100 of 10,000 stations costs the node a
        tenth of pricing all (benchmarks/fleet_page.py)."""
        scope = await self.scope(who)
        here = self.gateway.connections
        text = q.lower() if q else None
        matched: list[str] = []
        up = 0
        within = scope if who.role != "member" else None  # (a member sees every station)
        for listed in await registry.station_index(self.engine, within):
            is_online = listed.online or listed.id in here
            if online is not None and is_online != online:
                continue
            if text and text not in listed.text:
                continue
            matched.append(listed.id)
            up += is_online
        ids = matched[offset:] if limit is None else matched[offset:offset + limit]
        whole = len(ids) > _WHOLE  # (not thousands of ids in a query)
        shown = await registry.list_stations(self.engine, None if whole else ids)
        if whole:
            wanted = set(ids)
            shown = [s for s in shown if s["id"] in wanted]
        for station in shown:
            self._online(station)
        page = StationPage(shown, len(matched), up)
        if who.role == "member":
            page.stations = [{k: s.get(k) for k in PUBLIC_FIELDS} for s in shown]
            return page
        running = await registry.list_sessions(self.engine, active=True,
                                               station_ids=None if whole else ids)
        if whole:
            running = [r for r in running if r["station"] in wanted]
        active: dict[str, list[dict[str, Any]]] = {}
        for r in await views.priced(self.engine, running):
            active.setdefault(r["station"], []).append(r)
        for station in shown:  # (a scan of every running session for each station was
            station["sessions"] = active.get(station["id"], [])  # a third of a fleet poll)
        return page

    async def station(self, who: Principal, station_id: str) -> dict[str, Any]:
        row = await self._visible(who, station_id)
        try:
            shown = await registry.get_station(self.engine, station_id)
        except registry.RegistryError:
            raise not_found(f"station {station_id!r}") from None
        shown["online"], shown["node"] = await self._where(station_id, row.node)
        if who.role == "member":
            return {k: shown.get(k) for k in PUBLIC_FIELDS}
        shown["rules"] = await sharing.show_rules(self.engine, station_id)
        shown["sessions"] = await views.priced(self.engine, await registry.list_sessions(
            self.engine, station_id, active=True))
        shown["recent_sessions"] = await views.priced(self.engine, await registry.list_sessions(
            self.engine, station_id, limit=20))
        shown["log_requests"] = (await registry.list_uploads(self.engine, station_id))[-10:]
        async with self.engine.connect() as conn:
            shown["firmware_updates"] = [
                {"campaign": r.campaign_id, "status": r.status, "attempts": r.attempts,
                 "detail": r.detail, "updated_at": r.updated_at.isoformat(timespec="seconds") + "Z"}
                for r in await conn.execute(select(firmware_targets).where(
                    firmware_targets.c.station_id == station_id)
                    .order_by(firmware_targets.c.updated_at.desc()).limit(10))]
        return shown

    async def frames(self, who: Principal, station_id: str, limit: int = 100,
                     after: int | None = None) -> list[dict[str, Any]]:
        """The station's last OCPP frames (oldest first); `after`: only those newer than that id."""
        if who.role == "member":
            raise forbidden("member cannot read a station's frames")
        await self._visible(who, station_id)
        async with self.engine.connect() as conn:
            kept = await read_frames(conn, station_id, limit=limit, after=after)
        return [{"id": f.id, "at": f.ts.isoformat(timespec="milliseconds") + "Z",
                 "direction": f.direction, "frame": f.frame} for f in kept]

    async def command(self, who: Principal, station_id: str, name: str,
                      args: dict[str, Any], expires_s: float | None,
                      origin: str | None = None) -> dict[str, Any]:
        """Send a command to a station (the CLI's `remote` set) and return its answer; who
        sent it (this key, through the API or the console) and from where is kept."""
        if who.role == "member":
            raise forbidden("member cannot command a station: book it, or start at the charger")
        await self._visible(who, station_id)
        if not who.operator and name not in OWNER_COMMANDS:
            raise forbidden(f"{who.role} key may send {', '.join(sorted(OWNER_COMMANDS))}; "
                            f"{name!r} is the operator's")
        request: dict[str, Any] = {"command": name, "station": station_id, "args": args,
                                   "by": actor(who), "from": origin}
        if expires_s is not None:
            request["expires_s"] = expires_s
        return await self.operator.answer(request)

    # --- sessions ---------------------------------------------------------------------------

    async def sessions(self, who: Principal, station_id: str | None = None,
                       active: bool = False, since: datetime | None = None,
                       tag: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if who.role == "member":
            if tag not in (None, who.owner):
                raise forbidden("member sees its own sessions only")
            tag = who.owner
        if station_id is not None:
            await self._managed(who, station_id)
        scope = None if who.role == "member" else await self.scope(who)
        rows = await registry.list_sessions(self.engine, station_id, active=active, since=since,
                                            tag=tag, limit=limit, station_ids=scope)
        if who.role == "property":
            rows = await self._from_terms(who, rows)
        return await views.priced(self.engine, rows)

    async def _from_terms(self, who: Principal, rows: list[dict[str, Any]]
                          ) -> list[dict[str, Any]]:
        """A property sees a station's sessions from the day its terms began, not before."""
        since = await views.property_since(self.engine, who.owner or "")
        return [r for r in rows if r["station"] not in since
                or _started(r) >= since[r["station"]]]

    async def session(self, who: Principal, session_id: int) -> dict[str, Any]:
        shown = await views.session_detail(self.engine, session_id)
        if shown is None:
            raise not_found(f"session {session_id}")
        if who.role == "member":
            if shown["tag"] != who.owner:
                raise not_found(f"session {session_id}")
        else:
            scope = await self.scope(who)
            if scope is not None and shown["station"] not in scope:
                raise not_found(f"session {session_id}")
            if who.role == "property" and not await self._from_terms(who, [shown]):
                raise not_found(f"session {session_id}")
        return shown

    # --- members ----------------------------------------------------------------------------

    def _operator_only(self, who: Principal, what: str) -> None:
        if not who.operator:
            raise forbidden(f"{who.role} key cannot {what}: operator only")

    async def session_paid(self, who: Principal, session_id: int, amount_fen: int,
                           psp_ref: str, receipt: str | None,
                           origin: str | None = None) -> dict[str, Any]:
        """Book what the payment page of a charger's QR code captured for a session paid at
        the charger (2.1 DirectPayment)."""
        from cocharge.settlement import funds
        from cocharge.settlement.ledger import LedgerError

        self._operator_only(who, "book payments")
        said: dict[str, Any] = {"session": session_id, "psp_ref": psp_ref, "fen": amount_fen}
        try:
            # who booked it: written by the ledger with the payment's transfers
            with audit.acting(actor(who), origin, "card-payment", None, None, **said):
                done = await funds.card_payment(self.engine, session_id, psp_ref, amount_fen,
                                                receipt)
        except (funds.FundsError, LedgerError) as exc:
            raise ApiError(400, str(exc)) from None
        if not done.applied:  # booked before under this reference: recorded as asked again
            async with self.engine.begin() as conn:
                await audit.record(conn, actor(who), origin, "card-payment", None, None,
                                   {**said, "posted": False})
        return {"session": session_id, "applied": done.applied, "amount_fen": amount_fen,
                "debt_paid_fen": done.debt_paid_fen, "left_fen": done.left_fen}

    async def pair(self, who: Principal, station_id: str, connectors: int,
                   max_power_kw: float | None, owner: str | None,
                   origin: str | None = None) -> dict[str, Any]:
        """A pairing code for a new charger of the key's host or property (the operator names
        the owner): stations/pairing.py."""
        from cocharge.stations import pairing

        if who.role == "member":
            raise forbidden("member cannot add a charger")
        owner = owner if who.operator else who.owner
        if not owner:
            raise ApiError(400, "owner: whose charger it is (the host or property)")
        try:
            made = await pairing.create(self.engine, station_id, owner, connectors,
                                        max_power_kw, actor(who))
        except registry.RegistryError as exc:
            raise ApiError(409 if "already" in str(exc) else 400, str(exc)) from None
        async with self.engine.begin() as conn:
            await audit.record(conn, actor(who), origin, "pairing-code", station_id, None,
                               {"owner": owner, "connectors": connectors,
                                "expires_at": made["expires_at"]})
        return made

    async def invite(self, who: Principal, tag: str, base_url: str,
                     origin: str | None = None) -> dict[str, Any]:
        """A one-time link that makes a member's login (api/logins.py): the operator, a host
        or a property invites; a member cannot."""
        from cocharge.api import logins

        if who.role == "member":
            raise forbidden("member cannot invite: ask your host or the operator")
        try:
            token, expires = await logins.invite(self.engine, tag, actor(who))
        except logins.LoginError as exc:
            raise ApiError(404, str(exc)) from None
        async with self.engine.begin() as conn:
            await audit.record(conn, actor(who), origin, "invitation", None, f"member:{tag}",
                               {"expires_at": expires})
        return {"tag": tag, "url": f"{base_url.rstrip('/')}/console/join/{token}",
                "expires_at": expires}

    # --- the driver's page of a connector, from its QR code (issue 33, item 2) -----------------

    async def connector(self, who: Principal, station_id: str,
                        connector_id: int) -> dict[str, Any]:
        """What a driver at a connector sees: its state, the price now, the opening hours,
        and the driver's own session there (running, with energy and cost so far, or the
        last one with its bill)."""
        from cocharge.settlement.tariff21 import describe, price_parts

        station = await self.station(who, station_id)
        status = (station.get("connector_status") or {}).get(str(connector_id)) or \
            (station.get("connector_status") or {}).get(connector_id)
        n = int(station.get("connectors") or 1)
        if not 1 <= connector_id <= n:
            raise not_found(f"connector {connector_id} of {station_id}")
        async with self.engine.connect() as conn:
            found = await settle.tariff_in_force(conn, station_id, connector_id)
        rules = (await sharing.show_rules(self.engine, station_id)).get("station") or {}
        mine: dict[str, Any] | None = None
        if who.role == "member":
            own = [r for r in await self.sessions(who, station_id, limit=20)
                   if r.get("connector") == connector_id]
            mine = own[-1] if own else None
        return {"station": station_id, "connector": connector_id,
                "online": station.get("online"), "status": (status or {}).get("status"),
                "price": describe(found[1]) if found else None,
                "price_parts": price_parts(found[1]) if found else None,
                "windows": rules.get("windows") or [], "bookings": rules.get("bookings"),
                "session": mine}

    async def places(self, who: Principal, near: tuple[float, float] | None = None,
                     limit: int = NEAR) -> list[dict[str, Any]]:
        """The stations with a place that `who` sees, nearest first from `near` (lat, lon;
        else in the order of their ids), at most `limit`, with connector 1's state, its
        price now and its opening hours (the "near me" list): only the places of all are
        read, the rest of the chosen ones alone (a driver's page listed every station of
        the platform, each priced)."""
        from cocharge.settlement.tariff21 import describe, price_parts

        scope = await self.scope(who)
        ids = await registry.placed(self.engine, None if who.role == "member" else scope,
                                    near, limit)
        placed = await registry.list_stations(self.engine, ids)
        for station in placed:
            self._online(station)
        order = {sid: n for n, sid in enumerate(ids)}
        placed.sort(key=lambda s: order[s["id"]])
        async with self.engine.connect() as conn:
            prices = await settle.tariffs_in_force(conn, ids, 1)
            rules = await sharing.load_rules(conn, ids)
        shown = []
        for s in placed:
            status = (s.get("connector_status") or {}).get("1") or {}
            hours = sharing.rules_for(rules, str(s["id"]), 1)
            price = prices.get(str(s["id"]))
            shown.append({"station": s["id"], "connector": 1, "online": s.get("online"),
                          "status": status.get("status"),
                          "price": describe(price) if price is not None else None,
                          "price_parts": price_parts(price) if price is not None else None,
                          "windows": [str(w) for w in hours.windows] if hours else [],
                          "lat": s["lat"], "lon": s["lon"], "address": s.get("address") or ""})
        return shown

    async def free_slots(self, who: Principal, station_id: str,
                         connector_id: int) -> list[dict[str, str]]:
        """The next hours the member could book at the connector (the booking's own checks);
        naive UTC ISO texts."""
        if who.role != "member":
            return []
        await self._visible(who, station_id)
        try:
            found = await sharing.free_slots(self.engine, station_id, connector_id,
                                             str(who.owner))
        except registry.RegistryError as exc:
            raise not_found(str(exc)) from None
        return [{"from": start.isoformat(timespec="seconds") + "Z",
                 "to": end.isoformat(timespec="seconds") + "Z"} for start, end in found]

    async def driver_start(self, who: Principal, station_id: str, connector_id: int,
                           origin: str | None = None) -> dict[str, Any]:
        """A member starts charging at the connector in front of it: a remote start for its
        own tag, refused with the reason when its rules or its money do not allow it."""
        if who.role != "member":
            raise forbidden("only a member starts charging for itself here")
        await self._visible(who, station_id)
        short = await self.gateway.service.money_refusal(str(who.owner))
        if short is not None:
            raise ApiError(402, short)
        # Never queued for later: a start hours from now, when the charger is back, would
        # charge a driver who has long gone.
        return await self.operator.answer({
            "command": "start", "station": station_id,
            "args": {"tag": who.owner, "connector_id": connector_id},
            "by": actor(who), "from": origin, "queue": False})

    async def driver_stop(self, who: Principal, station_id: str, connector_id: int,
                          origin: str | None = None) -> dict[str, Any]:
        """A member stops its own running session at the connector (no other)."""
        if who.role != "member":
            raise forbidden("only a member stops its own session here")
        running = [r for r in await self.sessions(who, station_id, active=True)
                   if r.get("connector") == connector_id]
        if not running:
            raise ApiError(409, "you have no session charging at this connector")
        return await self.operator.answer({
            "command": "stop", "station": station_id,
            "args": {"session_id": running[-1]["id"]},
            "by": actor(who), "from": origin})

    # --- a host runs its own chargers (issue 33, item 4) ----------------------------------------

    async def _own_station(self, who: Principal, station_id: str, what: str) -> None:
        """The operator, or the host or property whose station it is; 404 / 403 otherwise."""
        if who.role == "member":
            raise forbidden(f"member cannot change a station's {what}")
        await self._visible(who, station_id)

    async def set_rules(self, who: Principal, station_id: str, body: dict[str, Any],
                        origin: str | None = None) -> dict[str, Any]:
        """Change a station's sharing rules: opening windows (empty: always open), closed
        dates, who it is shared with, bookings, minimum credit; checked as the CLI's
        `station rules` checks them."""
        from cocharge.hours import RuleError

        await self._own_station(who, station_id, "sharing rules")
        asked = {k: v for k, v in body.items() if k in (
            "windows", "closed_dates", "allowed_tags", "allowed_groups", "allowed_models",
            "bookings", "min_credit")}
        try:
            changes = sharing.rule_changes(asked)
        except RuleError as exc:
            raise ApiError(400, str(exc)) from None
        if not changes:
            raise ApiError(400, "nothing to change: give windows, closed_dates, allowed_tags, "
                                "allowed_groups, allowed_models, bookings or min_credit")
        try:
            await sharing.set_rules(self.engine, station_id, int(body.get("connector", 0)),
                                    changes, by=(actor(who), origin), said=asked)
        except (registry.RegistryError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        await self.gateway.control.rules_changed()
        return await sharing.show_rules(self.engine, station_id)

    async def set_price(self, who: Principal, station_id: str, per_kwh: str,
                        per_hour: str | None = None, origin: str | None = None) -> dict[str, Any]:
        """Set a station's price from now on (a session keeps the price it started with):
        per kWh, and per hour of charging if given; the overstay fee as configured."""
        from cocharge.settlement.money import MoneyError, parse_price
        from cocharge.settlement.tariff import simple_tariff

        await self._own_station(who, station_id, "price")
        try:
            made = simple_tariff(parse_price(per_kwh, "per_kwh"),
                                 parse_price(per_hour, "per_hour") if per_hour else None,
                                 idle=self.gateway.settings.idle_fee)
        except MoneyError as exc:
            raise ApiError(400, str(exc)) from None
        tariff_id = await settle.set_tariff(self.engine, station_id, 0, made)
        async with self.engine.begin() as conn:
            await audit.record(conn, actor(who), origin, "price", station_id, None,
                               {"per_kwh": per_kwh, "per_hour": per_hour, "tariff": tariff_id})
        return {"station": station_id, "tariff": tariff_id, "per_kwh": per_kwh,
                "per_hour": per_hour}

    async def audit(self, who: Principal, station_id: str | None, account: str | None,
                    limit: int) -> list[dict[str, Any]]:
        """Who did what (store/audit.py): the operator sees all; a host or a property only
        its own stations' entries, asked by station."""
        if not who.operator:
            if station_id is None:
                raise forbidden(f"{who.role} key sees who did what per station: ?station=ID")
            await self._visible(who, station_id)
            account = None
        return await audit.entries(self.engine, station_id, account, limit)

    async def members(self, who: Principal, q: str | None = None, limit: int | None = None,
                      offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The members that match `q` (tag, name, phone), a page of them, and how many match
        in all (`registry.member_page`)."""
        self._operator_only(who, "list members")
        return await registry.member_page(self.engine, q, limit, offset)

    async def member(self, who: Principal, tag: str) -> dict[str, Any]:
        from cocharge.settlement import loyalty

        if not who.operator and not (who.role == "member" and who.owner == tag):
            raise not_found(f"member {tag!r}")
        try:
            shown = dict(await loyalty.member_rewards(self.engine, tag))
        except loyalty.RewardsError:
            raise not_found(f"member {tag!r}") from None
        # What the member has at the charger: held for running sessions, what it owes, and
        # what it may spend now (settlement/funds.py).
        money = await funds.member_money(self.engine, tag)
        shown.update({k: money[k] for k in ("held_fen", "owed_fen", "credit_line_fen",
                                            "available_fen")})
        return shown

    async def add_station(self, who: Principal, new: registry.NewStation,
                          origin: str | None = None) -> dict[str, Any]:
        """Register a station (operator): the checks of `station add`; kept in the audit
        trail."""
        self._operator_only(who, "add stations")
        if new.password is not None and len(new.password) < 8:
            raise ApiError(400, "password: at least 8 characters (OCPP asks for 16 or more)")
        try:
            await registry.add_station(self.engine, new)
        except registry.RegistryError as exc:
            raise ApiError(409 if "already" in str(exc) else 400, str(exc)) from None
        async with self.engine.begin() as conn:
            await audit.record(conn, actor(who), origin, "station-added", new.station_id, None,
                               {"owner": new.owner, "connectors": new.connectors})
        return {"id": new.station_id}

    async def update_station(self, who: Principal, station_id: str, change: dict[str, Any],
                             origin: str | None = None) -> dict[str, Any]:
        """Change a station's details (operator): owner, connectors, max_power_kw, area,
        lat/lon, address; `station update`'s checks (registry.update_station), kept in the
        audit trail. Its password is changed at the charger (pairing, rotation), not here."""
        self._operator_only(who, "change stations")
        try:
            changed = await registry.update_station(self.engine, station_id, **change,
                                                    by=(actor(who), origin))
        except registry.RegistryError as exc:
            raise refusal(exc, f"station {station_id!r}") from None
        await self.operator.answer({"command": "station-changed", "station": station_id})
        return {"id": station_id, "changed": changed}

    async def add_member(self, who: Principal, name: str, tag: str, phone: str | None,
                         household: str | None) -> dict[str, Any]:
        self._operator_only(who, "add members")
        if not 1 <= len(tag) <= 20 or tag.startswith("#"):
            raise ApiError(400, "tag: 1 to 20 characters, not beginning with '#'")
        if household is not None and len(household) > 20:
            raise ApiError(400, "household: up to 20 characters")
        try:
            await registry.add_member(self.engine, name, tag, phone, None, None, household)
        except registry.RegistryError as exc:
            raise ApiError(409 if "already" in str(exc) else 400, str(exc)) from None
        return {"tag": tag, "name": name}

    async def member_details(self, who: Principal, tag: str) -> dict[str, Any]:
        """A member's details as `update_member` changes them (operator)."""
        self._operator_only(who, "read members' details")
        try:
            return await sharing.member_details(self.engine, tag)
        except registry.RegistryError:
            raise not_found(f"member {tag!r}") from None

    async def update_member(self, who: Principal, tag: str, change: dict[str, Any],
                            origin: str | None = None) -> dict[str, Any]:
        """Change a member's details (operator): `member update`'s checks, one place
        (sharing.update_member), kept in the audit trail; the chargers' local lists follow.
        `change`: update_member's keywords (name, phone, expires, groups, vehicle_model,
        quota_wh, prefers_green, household, pay_with, language)."""
        self._operator_only(who, "change members")
        try:
            changed = await sharing.update_member(self.engine, tag, **change,
                                                  by=(actor(who), origin))
        except registry.RegistryError as exc:
            raise refusal(exc, f"member {tag!r}") from None
        await self.operator.answer({"command": "member-changed", "station": "",
                                    "args": {"tag": tag}})
        return {"tag": tag, "changed": changed}

    async def block(self, who: Principal, tag: str, blocked: bool,
                    origin: str | None = None) -> None:
        self._operator_only(who, "block members")
        try:
            await registry.block_member(self.engine, tag, blocked, by=(actor(who), origin))
        except registry.RegistryError:
            raise not_found(f"member {tag!r}") from None
        await self.operator.answer({"command": "member-changed", "station": "",
                                    "args": {"tag": tag}})  # local lists follow at once

    # --- bookings and groups ----------------------------------------------------------------

    async def bookings(self, who: Principal, station_id: str | None = None) -> list[dict[str, Any]]:
        if station_id is not None and who.role != "member":
            await self._managed(who, station_id)
        if who.role == "member":
            return await sharing.list_bookings(self.engine, station_id, tag=who.owner or "")
        return await sharing.list_bookings(self.engine, station_id,
                                           station_ids=await self.scope(who))

    async def book(self, who: Principal, station_id: str, connector: int, tag: str | None,
                   start: datetime, end: datetime) -> dict[str, Any]:
        if who.role == "member":
            if tag not in (None, who.owner):
                raise forbidden("member books for itself only")
            tag = who.owner
            await self._visible(who, station_id)
        else:
            await self._managed(who, station_id)
        if tag is None:
            raise ApiError(400, "tag: the member the slot is for")
        try:
            booking_id = await sharing.add_booking(self.engine, station_id, connector, tag,
                                                   start, end)
        except registry.RegistryError as exc:
            raise ApiError(409, str(exc)) from None
        return {"id": booking_id, "station": station_id, "connector": connector, "tag": tag}

    async def cancel_booking(self, who: Principal, booking_id: int) -> None:
        mine = [b for b in await self.bookings(who) if b["id"] == booking_id]
        if not mine:
            raise not_found(f"booking {booking_id}")
        try:
            await sharing.cancel_booking(self.engine, booking_id)
        except registry.RegistryError as exc:
            raise ApiError(409, str(exc)) from None

    async def groups(self, who: Principal) -> list[dict[str, Any]]:
        if who.role == "member":
            return await sharing.list_groups(self.engine, member=who.owner or "")
        return await sharing.list_groups(self.engine, await self.scope(who))

    async def group(self, who: Principal, group_id: int) -> dict[str, Any]:
        """A group as its invitation link shows it: where, when, how many of how many, and
        whether the asking member is in it (members' tags only to the operator)."""
        try:
            shown = await sharing.show_group(self.engine, group_id)
        except registry.RegistryError as exc:
            raise not_found(f"group {group_id}") from exc
        if who.role != "member":
            await self._visible(who, str(shown["station"]))
        joined = who.role == "member" and who.owner in shown["members"]
        summary = {k: shown[k] for k in ("id", "station", "from", "to", "min_members",
                                         "status")}
        summary.update(count=len(shown["members"]), joined=joined)
        if who.operator:
            summary["members"] = shown["members"]
        return summary

    async def join_group(self, who: Principal, group_id: int) -> str:
        """A member joins a group from its invitation link (itself only)."""
        if who.role != "member":
            raise forbidden("only a member joins a group (as itself)")
        await self.group(who, group_id)
        try:
            return await sharing.join_group(self.engine, group_id, str(who.owner))
        except registry.RegistryError as exc:
            raise ApiError(409, str(exc)) from None

    # --- money ------------------------------------------------------------------------------

    def _who_disputes(self, who: Principal) -> str:
        return {"member": who.owner, "host": f"host:{who.owner}",
                "property": f"property:{who.owner}"}.get(who.role) or "operator"

    async def open_dispute(self, who: Principal, session_id: int, text: str) -> dict[str, Any]:
        """A member disputes its own session, a host or property one at its stations."""
        await self.session(who, session_id)  # 404 unless `who` may see it
        try:
            number = await disputes.open_dispute(self.engine, self._who_disputes(who),
                                                 f"session:{session_id}", text)
        except disputes.DisputeError as exc:
            raise ApiError(400, str(exc)) from None
        return (await disputes.list_disputes(self.engine, dispute_id=number))[0]

    async def disputes(self, who: Principal) -> list[dict[str, Any]]:
        return await disputes.list_disputes(
            self.engine, opened_by=None if who.operator else self._who_disputes(who))

    async def tariff(self, who: Principal, station_id: str) -> dict[str, Any]:
        from cocharge.settlement import settle

        await self._visible(who, station_id)
        found = await settle.show_tariffs(self.engine, station_id)
        return {"station": station_id, "tariffs": found}

    async def split(self, who: Principal, station_id: str) -> dict[str, Any]:
        from cocharge.settlement import settle

        if who.role == "member":
            raise forbidden("member cannot read split terms")
        await self._visible(who, station_id)
        async with self.engine.connect() as conn:
            return settle.terms_to_json(await settle.terms_of(conn, station_id))

    async def balances(self, who: Principal) -> list[dict[str, Any]]:
        from cocharge.settlement import ledger

        if who.operator:
            return await ledger.balances(self.engine)
        if who.role == "member":  # the member's own accounts: wallet, coins, credit, points...
            mine = {f"{kind}:{who.owner}" for kind in MEMBER_ACCOUNTS}
            return await ledger.balances(self.engine, accounts=mine)
        return await ledger.balances(self.engine, accounts=[str(self.account(who))])

    async def statement(self, who: Principal, account: str, since: datetime | None,
                        until: datetime | None) -> list[dict[str, Any]]:
        from cocharge.settlement import ledger

        if not who.operator and account != self.account(who):
            raise not_found(f"account {account!r}")
        return await ledger.statement(self.engine, account, since, until)

    async def monthly_statement(self, who: Principal, account: str | None,
                                month: str) -> dict[str, Any]:
        """A host's or property's monthly statement (settlement/statements.py): its own
        account's; the operator names any account."""
        from cocharge.settlement import statements
        from cocharge.settlement.payouts import PayoutError

        if who.role == "member":
            raise forbidden("member has no statement: its sessions and wallet are on its page")
        own = self.account(who)
        if not who.operator:
            if account not in (None, own):
                raise not_found(f"account {account!r}")
            account = own
        if account is None:
            raise ApiError(400, "account: host:NAME or property:NAME")
        try:
            return await statements.statement(self.engine, account, month)
        except PayoutError as exc:
            raise ApiError(404 if str(exc).startswith("no account") else 400, str(exc)) from None

    async def dashboard(self, who: Principal, days: int) -> dict[str, Any]:
        if who.role == "member":
            raise forbidden("member has no dashboard: see /api/v1/members/{tag}")
        since = (await views.property_since(self.engine, who.owner or "")
                 if who.role == "property" else None)
        shown = await views.dashboard(self.engine, await self.scope(who), self.account(who), days,
                                      since)
        shown["role"], shown["owner"] = who.role, who.owner
        return shown

    async def sites(self, who: Principal) -> list[dict[str, Any]]:
        from cocharge.load.sites import load_sites

        self._operator_only(who, "read the sites")
        async with self.engine.connect() as conn:
            names = sorted(await load_sites(conn))
        return [{"site": name, "live": self.gateway.load.live(name)} for name in names]

    async def frame_count(self, station_id: str) -> int:
        async with self.engine.connect() as conn:
            return await count_frames(conn, station_id)


def parse_time(text: str | None, what: str) -> datetime | None:
    """An API time: ISO 8601; without an offset it is UTC. Returned naive UTC (the store's)."""
    if text is None or text == "":
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"{what} {text!r}: an ISO 8601 time, e.g. 2026-11-24T08:00Z") from None
    return found if found.tzinfo is None else found.astimezone(UTC).replace(tzinfo=None)


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _started(row: dict[str, Any]) -> datetime:
    """A listed session's start (naive UTC), as the lists give it."""
    value = row.get("started") or row.get("started_at")
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).rstrip("Z"))
