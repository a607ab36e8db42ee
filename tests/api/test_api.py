"""The HTTP API of a running node over real sockets: keys and roles, scope (a property cannot
read or command another's station), commands reaching a simulated charger, live state,
money, bad input, and the OpenAPI document checked against the OpenAPI 3 specification."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from openapi_spec_validator import validate

from cocharge.api.keys import create_key, revoke_key
from cocharge.node import running_node
from cocharge.settlement import settle
from cocharge.stations import registry
from tests.conftest import register, settings, simulated, until


class Client:
    """A blocking HTTP client run in a thread, so the node on this loop keeps serving."""

    def __init__(self, base: str, key: str | None) -> None:
        self.base, self.key = base, key

    def _call(self, method: str, path: str, body: Any, headers: dict[str, str]
              ) -> tuple[int, Any, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for k, v in headers.items():
            request.add_header(k, v)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                raw, status, got = answer.read(), answer.status, answer.headers
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, exc.headers
        text = raw.decode()
        try:
            return status, json.loads(text) if text else None, got
        except ValueError:
            return status, text, got

    async def get(self, path: str, **headers: str) -> tuple[int, Any]:
        return (await self.answer(path, **headers))[:2]

    async def answer(self, path: str, **headers: str) -> tuple[int, Any, Any]:
        """GET: (status, body, the answer's headers, by any case of their names)."""
        return await asyncio.to_thread(self._call, "GET", path, None, headers)

    async def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        return (await asyncio.to_thread(self._call, "POST", path,
                                        body if body is not None else {}, headers))[:2]

    async def delete(self, path: str) -> tuple[int, Any]:
        return (await asyncio.to_thread(self._call, "DELETE", path, None, {}))[:2]

    async def put(self, path: str, body: Any) -> tuple[int, Any]:
        return (await asyncio.to_thread(self._call, "PUT", path, body, {}))[:2]

    async def patch(self, path: str, body: Any) -> tuple[int, Any]:
        return (await asyncio.to_thread(self._call, "PATCH", path, body, {}))[:2]


async def fleet(node: Any) -> dict[str, str]:
    """Three stations: P1 of the property Greenfield (host alice), P2 of the property Other,
    H1 a private host's (bob); members T1 and T2; a key for each role."""
    await register(node, "P1", "P2", "H1", tags=("T1", "T2"))
    await registry.update_station(node.engine, "P1", owner="alice")
    await registry.update_station(node.engine, "H1", owner="bob")
    await settle.set_terms(node.engine, "P1", {"model": "property", "property": "Greenfield",
                                               "operator": "installer"})
    await settle.set_terms(node.engine, "P2", {"model": "property", "property": "Other",
                                               "operator": "installer"})
    return {
        "operator": await create_key(node.engine, "ops", "operator", None),
        "property": await create_key(node.engine, "Greenfield backend", "property", "Greenfield"),
        "other": await create_key(node.engine, "Other backend", "property", "Other"),
        "host": await create_key(node.engine, "bob's app", "host", "bob"),
        "member": await create_key(node.engine, "T1's app", "member", "T1"),
    }


def base(node: Any) -> str:
    assert node.api is not None
    return node.api.url


async def test_openapi_document_is_valid_and_documented(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        anyone = Client(base(node), None)
        status, spec = await anyone.get("/api/openapi.json")
        assert status == 200
        validate(spec)  # raises on any departure from the OpenAPI 3 specification
        assert spec["openapi"].startswith("3.")
        for path in ("/api/v1/stations", "/api/v1/stations/{station_id}/commands",
                     "/api/v1/sessions", "/api/v1/members", "/api/v1/bookings",
                     "/api/v1/dashboard", "/api/v1/calculator/revenue"):
            assert path in spec["paths"], path
        status, page = await anyone.get("/api/docs")
        assert status == 200 and "/api/v1/stations/{station_id}/commands" in page


async def test_a_key_sees_only_what_its_role_and_owner_allow(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        ops, prop, other = (Client(url, keys[k]) for k in ("operator", "property", "other"))
        host, member = Client(url, keys["host"]), Client(url, keys["member"])

        status, me = await prop.get("/api/v1/me")
        assert status == 200 and me["role"] == "property" and me["owner"] == "Greenfield"
        assert {s["id"] for s in (await ops.get("/api/v1/stations"))[1]} == {"P1", "P2", "H1"}
        assert [s["id"] for s in (await prop.get("/api/v1/stations"))[1]] == ["P1"]
        assert [s["id"] for s in (await other.get("/api/v1/stations"))[1]] == ["P2"]
        assert [s["id"] for s in (await host.get("/api/v1/stations"))[1]] == ["H1"]

        # Another property's station does not exist for this key: read, frames, command.
        assert (await prop.get("/api/v1/stations/P2"))[0] == 404
        assert (await prop.get("/api/v1/stations/P2/frames"))[0] == 404
        assert (await prop.get("/api/v1/stations/P2/split"))[0] == 404
        assert (await prop.get("/api/v1/sessions?station=P2"))[0] == 404
        status, body = await prop.post("/api/v1/stations/P2/commands",
                                       {"command": "reset", "args": {}})
        assert status == 404 and "P2" in body["error"]
        assert (await prop.get("/api/v1/stations/P1"))[0] == 200
        # Its own charger: the owner's commands, not the operator's.
        status, body = await prop.post("/api/v1/stations/P1/commands",
                                       {"command": "config-set",
                                        "args": {"key": "HeartbeatInterval", "value": "60"}})
        assert status == 403 and "operator" in body["error"]

        # A member sees stations as a driver does, and only its own things.
        status, public = await member.get("/api/v1/stations")
        assert status == 200 and {s["id"] for s in public} == {"P1", "P2", "H1"}
        assert all("owner" not in s and "password" not in s for s in public)
        assert (await member.get("/api/v1/stations/P1/frames"))[0] == 403
        assert (await member.post("/api/v1/stations/P1/commands",
                                  {"command": "unlock", "args": {"connector_id": 1}}))[0] == 403
        assert (await member.get("/api/v1/members"))[0] == 403
        status, me = await member.get("/api/v1/members/T1")
        assert status == 200 and me["owed_fen"] == 0 and me["held_fen"] == 0
        assert me["available_fen"] == me["wallet_fen"] + me["credit_line_fen"]  # what it may spend
        assert (await member.get("/api/v1/members/T2"))[0] == 404
        assert (await member.get("/api/v1/sessions?tag=T2"))[0] == 403
        assert (await member.get("/api/v1/dashboard"))[0] == 403
        assert (await prop.get("/api/v1/members"))[0] == 403
        assert (await prop.get("/api/v1/accounts/property:Other/statement"))[0] == 404
        assert (await prop.get("/api/v1/accounts/property:Greenfield/statement"))[0] == 200

        # Members' bookings: for itself only, and another member's cannot be cancelled.
        status, booked = await member.post("/api/v1/bookings", {
            "station": "P1", "from": "2030-01-01T19:00", "to": "2030-01-01T20:00"})
        assert status == 201 and booked["tag"] == "T1"
        assert (await member.post("/api/v1/bookings", {
            "station": "P1", "tag": "T2", "from": "2030-01-02T19:00",
            "to": "2030-01-02T20:00"}))[0] == 403
        status, theirs = await ops.post("/api/v1/bookings", {
            "station": "P2", "tag": "T2", "from": "2030-01-03T19:00", "to": "2030-01-03T20:00"})
        assert status == 201
        assert [b["id"] for b in (await member.get("/api/v1/bookings"))[1]] == [booked["id"]]
        assert [b["id"] for b in (await prop.get("/api/v1/bookings"))[1]] == [booked["id"]]
        assert (await member.delete(f"/api/v1/bookings/{theirs['id']}"))[0] == 404
        assert (await member.delete(f"/api/v1/bookings/{booked['id']}"))[0] == 204

        # No key, a wrong key, a revoked key: each said as it is.
        status, body = await Client(url, None).get("/api/v1/stations")
        assert status == 401 and "an API key is required" in body["error"]
        status, body = await Client(url, keys["property"][:-2] + "xx").get("/api/v1/stations")
        assert status == 401 and "not valid" in body["error"]
        await revoke_key(node.engine, keys["other"].split("_")[1])
        status, body = await other.get("/api/v1/stations")
        assert status == 401 and "revoked" in body["error"]


async def test_commands_reach_the_charger_and_the_state_is_live(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        prop = Client(base(node), keys["property"])
        async with simulated(node, "P1", "1.6", meter_interval_s=0.2) as box:
            async def online() -> Any:
                found = (await prop.get("/api/v1/stations"))[1]
                return found[0]["online"] and found[0]["connector_status"]
            await until(online)
            status, answer = await prop.post("/api/v1/stations/P1/commands", {
                "command": "start", "args": {"tag": "T1", "connector_id": 1}})
            assert status == 200 and answer["accepted"] and answer["status"] == "Accepted"

            async def charging() -> Any:
                found = (await prop.get("/api/v1/stations/P1"))[1]
                running = found["sessions"]
                return running if running and running[0]["energy_wh"] else None
            [running] = await until(charging)
            assert running["tag"] == "T1" and running["cost_so_far_fen"] is not None
            status, active = await prop.get("/api/v1/sessions?active=true")
            assert [s["id"] for s in active] == [running["id"]]

            status, answer = await prop.post("/api/v1/stations/P1/commands", {
                "command": "stop", "args": {"session_id": running["id"]}})
            assert status == 200 and answer["accepted"]
            await asyncio.wait_for(box.sessions[1].done.wait(), 10)

            async def settled() -> Any:
                shown = (await prop.get(f"/api/v1/sessions/{running['id']}"))[1]
                return shown if "bill" in shown else None
            shown = await until(settled)
            assert shown["status"] == "completed" and shown["energy_wh"] > 0
            assert sum(v for _, v in shown["split"]) == shown["bill"]["payable_fen"]

            async def framed() -> Any:
                frames = (await prop.get("/api/v1/stations/P1/frames?limit=500"))[1]
                return frames if any('"RemoteStartTransaction"' in f["frame"] for f in frames) \
                    else None
            frames = await until(framed)
            assert {f["direction"] for f in frames} >= {"in", "out"}
            newest = frames[-1]["id"]
            assert (await prop.get(f"/api/v1/stations/P1/frames?after={newest}"))[1] == []

            # The property's dashboard: its share of the split, what drivers paid.
            status, board = await prop.get("/api/v1/dashboard?days=7")
            mine = sum(v for who, v in shown["split"] if who == "property:Greenfield")
            assert status == 200 and board["sessions"] == 1 and mine > 0
            assert board["earned_fen"] == mine and board["billed_fen"] == shown["bill"]["payable_fen"]
            # T1 has no wallet: the driver owes the bill, and the property's share waits for it
            # (it is not the property's to be paid out until the driver pays).
            assert board["paid_fen"] == 0 and board["owed_by_drivers_fen"] == board["billed_fen"]
            assert board["owed_fen"] == 0 and board["waiting_for_drivers_fen"] == mine
            assert sum(d["fen"] for d in board["revenue_by_day"]) == mine
            assert len(board["utilisation_by_hour_of_week"]) == 168
            assert max(board["utilisation_by_hour_of_week"]) > 0
            # The other property earned nothing from it.
            other = Client(base(node), keys["other"])
            assert (await other.get("/api/v1/dashboard"))[1]["sessions"] == 0
            assert (await other.get(f"/api/v1/sessions/{running['id']}"))[0] == 404
            # The member sees its own session, with its bill.
            member = Client(base(node), keys["member"])
            assert [s["id"] for s in (await member.get("/api/v1/sessions"))[1]] == [running["id"]]


async def test_bad_input_gets_a_clear_error_and_changes_nothing(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        ops = Client(base(node), keys["operator"])
        status, body = await ops.post("/api/v1/members", {"name": "X", "tag": "T" * 21})
        assert status == 422 and body["error"].startswith("tag:")
        status, body = await ops.post("/api/v1/members", b"{not json")
        assert status == 422
        status, body = await ops.post("/api/v1/members", {"name": "Dup", "tag": "T1"})
        assert status == 409 and "already" in body["error"]
        status, body = await ops.post("/api/v1/members", {"name": "New", "tag": "T9"})
        assert status == 201
        status, body = await ops.post("/api/v1/stations/P1/commands",
                                      {"command": "explode", "args": {}})
        assert status == 400 and "unknown command" in body["message"]
        status, body = await ops.post("/api/v1/stations/P1/commands",
                                      {"command": "start", "args": {"tag": 5}})
        assert status == 400
        status, body = await ops.post("/api/v1/bookings", {
            "station": "P1", "tag": "T1", "from": "tomorrow", "to": "later"})
        assert status == 400 and "not a time" in body["error"]
        status, body = await ops.get("/api/v1/sessions?since=yesterday")
        assert status == 400 and "ISO 8601" in body["error"]
        status, body = await ops.get("/api/v1/sessions?limit=0")
        assert status == 422
        status, body = await ops.post("/api/v1/calculator/revenue",
                                      {"power_kw": 7, "price": "1e3"})
        assert status == 400
        status, body = await ops.post("/api/v1/calculator/revenue",
                                      {"power_kw": 7, "price": "1.20",
                                       "open": ["mon-fri 19:00-23:00"]})
        assert status == 200 and len(body["hourly_utilisation"]) == 168
        assert [m["tag"] for m in (await ops.get("/api/v1/members"))[1]].count("T1") == 1
        # A member's details: the operator's, checked as the CLI does, nothing of a bad one.
        for change, code, says in (({"phone": "call me"}, 400, "phone"),
                                   ({"name": "X", "expires_at": "soon"}, 400, "ISO 8601"),
                                   ({"quota_kwh": "NaN"}, 422, "quota_kwh"),
                                   ({"language": "fr"}, 422, "language"),
                                   ({"tag": "T7"}, 422, "tag")):
            status, body = await ops.patch("/api/v1/members/T1", change)
            assert status == code and says in json.dumps(body), (change, body)
        status, body = await ops.patch("/api/v1/members/NOPE", {"name": "X"})
        assert status == 404
        host = Client(base(node), keys["host"])
        assert (await host.patch("/api/v1/members/T1", {"name": "X"}))[0] == 403
        status, body = await ops.patch("/api/v1/members/T1", {
            "name": "Tian Yi", "expires_at": "2027-06-30T19:00+08:00", "groups": ["block-7"],
            "quota_kwh": "12.5", "pay_with": ["points"]})
        assert status == 200 and body["changed"] == {
            "name": "Tian Yi", "expires_at": "2027-06-30T11:00:00Z", "groups": "block-7",
            "quota_wh": 12500, "pay_with": "points"}
        [t1] = [m for m in (await ops.get("/api/v1/members"))[1] if m["tag"] == "T1"]
        assert t1["name"] == "Tian Yi" and t1["expires_at"] == "2027-06-30T11:00:00Z"
        [entry] = (await ops.get("/api/v1/audit?account=member:T1"))[1]
        assert entry["actor"] == "operator key ops (api)" and entry["details"]["name"] == "Tian Yi"
        # A station's details: the operator's, `station update`'s checks, nothing of a bad one.
        for change, code in (({"max_power_kw": 5000}, 422), ({"lat": 31.2}, 400),
                             ({"owner": "x" * 101}, 422), ({"password": "p" * 20}, 422)):
            status, body = await ops.patch("/api/v1/stations/P2", change)
            assert status == code, (change, body)
        assert (await ops.patch("/api/v1/stations/NOPE", {"area": "x"}))[0] == 404
        assert (await host.patch("/api/v1/stations/H1", {"area": "x"}))[0] == 403
        status, body = await ops.patch("/api/v1/stations/P2", {
            "max_power_kw": 22, "lat": 31.23, "lon": 121.47, "area": ""})
        assert status == 200 and body["changed"] == {"max_power_kw": 22.0, "lat": 31.23,
                                                     "lon": 121.47, "area": None}
        shown = (await ops.get("/api/v1/stations/P2"))[1]
        assert (shown["max_power_kw"], shown["lat"]) == (22.0, 31.23)
        [entry] = [e for e in (await ops.get("/api/v1/audit?station=P2"))[1]
                   if e["action"] == "station-changed"]
        assert entry["details"]["max_power_kw"] == 22.0
        # The offline station's command is queued, as with `cocharge remote`.
        status, body = await ops.post("/api/v1/stations/H1/commands",
                                      {"command": "reset", "args": {}, "expires_s": 60})
        assert status == 200 and body["queued"]


async def test_guessing_keys_is_slowed_down(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        statuses = [(await Client(url, f"cck_{i:08x}_guess").get("/api/v1/me"))[0]
                    for i in range(25)]
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        # The right key from that address waits too (the guesser cannot tell it from a wrong one).
        assert (await Client(url, keys["operator"]).get("/api/v1/me"))[0] == 429


async def test_another_site_cannot_ride_the_console_cookie(sqlite_url):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        anyone = Client(url, None)
        cookie = f"cocharge_key={keys['operator']}"
        host = url.removeprefix("http://")
        status, page = await anyone.post("/console/stations/H1/command", b"command=reset",
                                         Cookie=cookie, Origin="http://evil.example")
        assert status == 403 and "来自其他网站的表单" in page  # no language asked: Chinese
        status, page = await anyone.post("/console/stations/H1/command", b"command=reset",
                                         Cookie=cookie, Origin=f"http://{host}",
                                         **{"Accept-Language": "en-GB,en;q=0.8"})
        assert status == 200 and "queued" in page  # H1 is offline: the reset waits for it
        # The API takes the cookie for reading only: a command needs the key itself.
        assert (await anyone.get("/api/v1/me", Cookie=cookie))[0] == 200
        assert (await anyone.post("/api/v1/stations/H1/commands", {"command": "reset"},
                                  Cookie=cookie))[0] == 401


async def test_a_member_sees_only_its_own_balances(sqlite_url):
    """A member whose tag is also a host's name does not see the host's earnings (nor the
    host the member's wallet)."""
    from cocharge.settlement.ledger import Transfer, post_batch

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await register(node, "H1", tags=("bob",))
        key = await create_key(node.engine, "bob's phone", "member", "bob")
        await post_batch(node.engine, [
            Transfer("t1", "external:topup", "wallet:bob", 500, kind="topup", ref="r1"),
            Transfer("t2", "clearing:sessions", "host:bob", 300, kind="split", ref="s1")], "b1")
        status, rows = await Client(base(node), key).get("/api/v1/balances")
        assert status == 200 and [r["account"] for r in rows] == ["wallet:bob"]
        # the host bob sees its earnings only, the operator every balance
        await registry.update_station(node.engine, "H1", owner="bob")
        host = Client(base(node), await create_key(node.engine, "bob's app", "host", "bob"))
        status, rows = await host.get("/api/v1/balances")
        assert status == 200 and [(r["account"], r["balance"]) for r in rows] == [("host:bob", 300)]
        ops = Client(base(node), await create_key(node.engine, "ops", "operator", None))
        status, rows = await ops.get("/api/v1/balances")
        assert {r["account"] for r in rows} >= {"wallet:bob", "host:bob", "external:topup"}


async def test_a_property_attached_later_sees_only_sessions_from_its_terms_on(sqlite_url):
    """A host's wallbox joins a property's scheme: the property sees its sessions from that
    day, never the host's earlier sessions, driver tags or split."""
    from datetime import timedelta

    from cocharge.store.db import utcnow
    from tests.settlement.test_settle import insert_session

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await register(node, "J1", tags=("T1",))
        before = await insert_session(node.engine, "J1", "T1", 3000,
                                      utcnow() - timedelta(days=3))
        await settle.settle_session(node.engine, before)
        await settle.set_terms(node.engine, "J1", {"model": "property", "property": "Later",
                                                   "operator": "installer"})
        after = await insert_session(node.engine, "J1", "T1", 2000, utcnow(), minutes=30)
        await settle.settle_session(node.engine, after)
        later = Client(base(node), await create_key(node.engine, "Later", "property", "Later"))
        ops = Client(base(node), await create_key(node.engine, "ops", "operator", None))
        assert {s["id"] for s in (await ops.get("/api/v1/sessions"))[1]} == {before, after}
        status, seen = await later.get("/api/v1/sessions")
        assert status == 200 and [s["id"] for s in seen] == [after]
        assert (await later.get(f"/api/v1/sessions/{before}"))[0] == 404
        assert (await later.get(f"/api/v1/sessions/{after}"))[0] == 200
        status, board = await later.get("/api/v1/dashboard?days=7")
        assert status == 200 and board["sessions"] == 1


async def test_a_member_and_a_host_dispute_their_sessions_and_the_operator_sees_them(sqlite_url):
    from datetime import timedelta

    from cocharge.store.db import utcnow
    from tests.settlement.test_settle import insert_session

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        mine = await insert_session(node.engine, "H1", "T1", 3000, utcnow() - timedelta(hours=2))
        theirs = await insert_session(node.engine, "P1", "T2", 3000, utcnow() - timedelta(hours=1))
        member = Client(base(node), keys["member"])
        host = Client(base(node), keys["host"])
        ops = Client(base(node), keys["operator"])
        status, opened = await member.post("/api/v1/disputes",
                                           {"session_id": mine, "text": "I was not there"})
        assert status == 201 and opened["by"] == "T1" and opened["status"] == "open"
        assert (await member.post("/api/v1/disputes", {"session_id": theirs, "text": "x"}))[0] == 404
        assert (await member.post("/api/v1/disputes", {"session_id": mine, "text": ""}))[0] == 422
        status, also = await host.post("/api/v1/disputes",
                                       {"session_id": mine, "text": "the price was wrong"})
        assert status == 201 and also["by"] == "host:bob"
        assert [d["id"] for d in (await member.get("/api/v1/disputes"))[1]] == [opened["id"]]
        assert len((await ops.get("/api/v1/disputes"))[1]) == 2


async def test_numbers_out_of_range_are_the_clients_mistake(sqlite_url):
    """Issue 30: a 64-bit overflow in a path, a query or a body is a 422 naming the field,
    never a 500."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        ops = Client(base(node), keys["operator"])
        big = 2**63
        status, body = await ops.get(f"/api/v1/sessions/{big}")
        assert status == 422 and "session_id" in json.dumps(body)
        status, body = await ops.get(f"/api/v1/stations/P1/frames?after={big}")
        assert status == 422 and "after" in json.dumps(body)
        status, body = await ops.post("/api/v1/stations/P1/commands",
                                      {"command": "reset", "expires_s": big})
        assert status == 422 and "expires_s" in json.dumps(body)
        assert (await ops.delete(f"/api/v1/bookings/{big}"))[0] == 422


async def running_session(node: Any, station: str, tag: str) -> int:
    """A session running at `station` for the last 10 minutes, 1 kWh so far (its rows, as the
    gateway writes them)."""
    from datetime import timedelta

    from sqlalchemy import insert

    from cocharge.store.db import utcnow
    from cocharge.store.schema import ENERGY_REGISTER, meter_samples, sessions

    start = utcnow() - timedelta(minutes=10)
    async with node.engine.begin() as conn:
        sid = int((await conn.execute(insert(sessions).values(
            station_id=station, connector_id=1, tx_ref=f"T-{station}", protocol="1.6",
            id_tag=tag, started_at=start, meter_start_wh=0, status="active",
            created_at=start).returning(sessions.c.id))).scalar_one())
        await conn.execute(insert(meter_samples), [
            {"session_id": sid, "station_id": station, "connector_id": 1,
             "ts": start + timedelta(minutes=k), "measurand": ENERGY_REGISTER,
             "value": float(k * 100)} for k in range(11)])
    return sid


async def test_the_station_list_comes_in_pages_with_the_counts_of_the_whole(sqlite_url):
    """GET /api/v1/stations?limit&offset: a page of the stations in the order of their ids,
    each with its own running sessions priced; X-Total-Count and X-Online-Count count all
    that match the filter in the key's scope, whatever the page."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)  # P1 P2 H1
        await register(node, "A1", "A2", "Z1", tags=())
        await settle.set_terms(node.engine, "Z1", {"model": "property", "property": "Greenfield",
                                                   "operator": "installer"})
        at_a2, at_z1 = await running_session(node, "A2", "T1"), await running_session(node, "Z1", "T2")
        ops = Client(base(node), keys["operator"])
        async with simulated(node, "P2", "1.6"):
            async def p2_online() -> Any:
                return (await ops.get("/api/v1/stations?online=true"))[1]
            await until(p2_online)

            status, everything, head = await ops.answer("/api/v1/stations")
            ids = [s["id"] for s in everything]
            assert status == 200 and ids == ["A1", "A2", "H1", "P1", "P2", "Z1"]
            assert (head["X-Total-Count"], head["X-Online-Count"]) == ("6", "1")

            pages = []
            for offset in (0, 2, 4, 6):
                status, page, head = await ops.answer(f"/api/v1/stations?limit=2&offset={offset}")
                assert status == 200 and (head["X-Total-Count"], head["X-Online-Count"]) == ("6", "1")
                pages.append(page)
            assert [[s["id"] for s in page] for page in pages] == [
                ["A1", "A2"], ["H1", "P1"], ["P2", "Z1"], []]
            # each station with its own running session, priced so far (1 kWh at the default)
            sessions = {s["id"]: [r["id"] for r in s["sessions"]] for page in pages for s in page}
            assert sessions == {"A1": [], "A2": [at_a2], "H1": [], "P1": [], "P2": [],
                                "Z1": [at_z1]}
            priced = [r for page in pages for s in page for r in s["sessions"]]
            assert all(r["cost_so_far_fen"] and r["cost_so_far_fen"] > 0 for r in priced)
            assert priced == [r for s in everything for r in s["sessions"]]
            # the page of what a filter matches, counted as the whole of that
            status, page, head = await ops.answer("/api/v1/stations?online=false&limit=1&offset=1")
            assert [s["id"] for s in page] == ["A2"]
            assert (head["X-Total-Count"], head["X-Online-Count"]) == ("5", "0")
            status, page, head = await ops.answer("/api/v1/stations?q=z&limit=10")
            assert [s["id"] for s in page] == ["Z1"] and head["X-Total-Count"] == "1"
            # a property counts what it sees: P1 and Z1, of which none online
            prop = Client(base(node), keys["property"])
            status, page, head = await prop.answer("/api/v1/stations?limit=1&offset=1")
            assert [s["id"] for s in page] == ["Z1"] and page[0]["sessions"][0]["id"] == at_z1
            assert (head["X-Total-Count"], head["X-Online-Count"]) == ("2", "0")
            # a member sees the driver's fields of every station, in pages too
            member = Client(base(node), keys["member"])
            status, page, head = await member.answer("/api/v1/stations?limit=2&offset=3")
            assert [s["id"] for s in page] == ["P1", "P2"] and "sessions" not in page[0]
            assert (head["X-Total-Count"], head["X-Online-Count"]) == ("6", "1")
            # a page that cannot be is the client's mistake, named
            for query, field in (("limit=0", "limit"), ("limit=10001", "limit"),
                                 ("offset=-1", "offset"), ("limit=two", "limit")):
                status, body = await ops.get(f"/api/v1/stations?{query}")
                assert status == 422 and field in body["error"], (query, body)


async def test_members_are_searched_and_listed_in_pages(db_url):
    """GET /api/v1/members?q&limit&offset: in the order of names, the search in tag, name
    and phone in any case, counted whole in X-Total-Count; the operator's only."""
    async with running_node(db_url, settings(api_port=0)) as node:
        # (names that sort alike in every collation the database may have)
        for name, tag, phone in (("Wang Fang", "WF1", "13800000001"), ("Wang Lei", "WL2", None),
                                 ("Li Na", "LN3", "13900000002"), ("Ma Jun", "MJ5", None),
                                 ("Sun Li", "T1", None), ("Zhao 50%_off", "Z_4", None)):
            await registry.add_member(node.engine, name, tag, phone)
        ops = Client(base(node), await create_key(node.engine, "ops", "operator", None))
        status, everyone, head = await ops.answer("/api/v1/members")
        assert status == 200 and head["X-Total-Count"] == "6"
        assert [m["name"] for m in everyone] == ["Li Na", "Ma Jun", "Sun Li", "Wang Fang",
                                                 "Wang Lei", "Zhao 50%_off"]
        pages = [(await ops.answer(f"/api/v1/members?limit=4&offset={o}")) for o in (0, 4, 8)]
        assert [[m["tag"] for m in page] for _, page, _ in pages] == [
            ["LN3", "MJ5", "T1", "WF1"], ["WL2", "Z_4"], []]
        assert {head["X-Total-Count"] for _, _, head in pages} == {"6"}
        for query, tags in (("q=WANG", ["WF1", "WL2"]), ("q=wl", ["WL2"]),
                            ("q=1390", ["LN3"]), ("q=50%25", ["Z_4"]), ("q=_", ["Z_4"]),
                            ("q=%25", ["Z_4"]), ("q=nobody", [])):
            status, found, head = await ops.answer(f"/api/v1/members?{query}")
            assert [m["tag"] for m in found] == tags, query
            assert head["X-Total-Count"] == str(len(tags))
        status, found, head = await ops.answer("/api/v1/members?q=wang&limit=1&offset=1")
        assert [m["tag"] for m in found] == ["WL2"] and head["X-Total-Count"] == "2"
        await register(node, "H1", tags=())
        await registry.update_station(node.engine, "H1", owner="bob")
        host = Client(base(node), await create_key(node.engine, "bob's app", "host", "bob"))
        assert (await host.get("/api/v1/members"))[0] == 403
        for query, field in (("limit=0", "limit"), ("offset=-1", "offset"),
                             ("q=" + "x" * 101, "q")):
            status, body = await ops.get(f"/api/v1/members?{query}")
            assert status == 422 and field in body["error"], (query, body)


async def test_the_stations_a_host_or_property_manages_are_those_its_terms_say(db_url):
    """`views.stations_of`, which every host's and property's request asks (its scope), gives
    exactly what `views.parties` says of every station, for owners, hosts named by the
    terms, properties, names inside other names, LIKE's own characters and Chinese names."""
    from cocharge import views

    async with running_node(db_url, settings(api_port=0)) as node:
        await register(node, "A1", "A2", "A3", "P1", "P2", "C1", "X1", "Q1", tags=())
        for station, owner in (("A1", "alice"), ("A2", "alice"), ("P1", "carol"),
                               ("P2", "carol"), ("C1", "王芳"), ("X1", "alice2"),
                               ("Q1", "Green 50%_park")):
            await registry.update_station(node.engine, station, owner=owner)
        await settle.set_terms(node.engine, "A2", {"host": "bob"})
        await settle.set_terms(node.engine, "P1", {"model": "property",
                                                   "property": "Green 50%_park",
                                                   "operator": "installer"})
        await settle.set_terms(node.engine, "P2", {"property": "alice"})  # not the model
        await settle.set_terms(node.engine, "C1", {"model": "property", "property": "绿地",
                                                   "operator": "installer", "host": "王芳"})
        every = await views.parties(node.engine)
        async with node.engine.connect() as conn:
            terms = {s: await settle.terms_of(conn, s) for s in every}
        for name in ("alice", "bob", "carol", "alice2", "owner-of-A3", "王芳", "绿地",
                     "Green 50%_park", "Green 5%", "Green", "ALICE", "nobody", ""):
            for role, index in (("host", 0), ("property", 1)):
                wanted = {s for s, p in every.items() if p[index] == name}
                assert await views.stations_of(node.engine, role, name) == wanted, (role, name)
            # and since when a property sees each of its stations' sessions
            since = {s: t.property_since for s, t in terms.items()
                     if t.model == "property" and t.property == name
                     and t.property_since is not None}
            assert await views.property_since(node.engine, name) == since, name
        assert await views.stations_of(node.engine, "host", "alice") == {"A1"}  # A2: bob
        assert await views.stations_of(node.engine, "property", "Green 50%_park") == {"P1"}


async def test_each_key_lists_the_groups_it_may_see(db_url):
    """GET /api/v1/groups: the operator every group, a property and a host those at their
    stations, a member those it joined, each with its member count."""
    from datetime import timedelta

    from cocharge.stations import sharing
    from cocharge.store.db import utcnow

    async with running_node(db_url, settings(api_port=0)) as node:
        keys = await fleet(node)  # P1 Greenfield's, H1 bob's; members T1, T2
        start = utcnow().replace(microsecond=0) + timedelta(days=1)
        at_p1 = await sharing.create_group(node.engine, "P1", start, start + timedelta(hours=2),
                                           None, "T1")
        at_h1 = await sharing.create_group(node.engine, "H1", start, start + timedelta(hours=2),
                                           None, "T2")

        async def seen(role: str) -> list[tuple[int, str, int]]:
            status, groups = await Client(base(node), keys[role]).get("/api/v1/groups")
            assert status == 200, groups
            return [(g["id"], g["station"], g["members"]) for g in groups]

        await sharing.join_group(node.engine, at_p1, "T2")
        assert await seen("operator") == [(at_p1, "P1", 2), (at_h1, "H1", 1)]
        assert await seen("property") == [(at_p1, "P1", 2)]
        assert await seen("host") == [(at_h1, "H1", 1)]
        assert await seen("other") == []
        assert await seen("member") == [(at_p1, "P1", 2)]  # T1 opened it; not H1's


async def test_the_audit_trail_names_who_sent_a_command_and_who_moved_money(sqlite_url):
    """Issue 33, item 5: a command through the API is kept with the key that sent it and
    its address; a CLI top-up with the CLI's user; the operator reads all of it, a host only
    its own stations' (API, CLI `cocharge audit`)."""
    from tests import forked_cli

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        operator, host = Client(url, keys["operator"]), Client(url, keys["host"])
        status, answer = await host.post("/api/v1/stations/H1/commands", {"command": "reset"})
        assert status == 200 and answer["queued"], answer
        status, answer = await operator.post("/api/v1/stations/P1/commands",
                                              {"command": "unlock", "args": {"connector_id": 1}})
        assert status == 200, answer
        topped = await asyncio.to_thread(forked_cli.run, [
            "wallet", "topup", "T1", "12.50", "--ref", "pay-77", "--db", sqlite_url])
        assert topped.returncode == 0, topped.stderr

        status, rows = await operator.get("/api/v1/audit?station=H1")
        assert status == 200 and len(rows) == 1
        [h1] = rows
        assert h1["actor"] == "host key bob's app (api)" and h1["origin"] == "127.0.0.1"
        assert h1["action"] == "command" and h1["details"]["command"] == "reset"
        assert h1["details"]["status"] == "Queued"
        status, rows = await operator.get("/api/v1/audit?account=wallet:T1")
        assert status == 200 and [r["action"] for r in rows] == ["top-up"]
        assert rows[0]["actor"].startswith("cli ") and rows[0]["details"]["fen"] == 1250
        status, rows = await operator.get("/api/v1/audit")
        assert {r["action"] for r in rows} == {"command", "top-up"} and len(rows) == 3
        # A host reads its own stations' entries, not another's, not the money of all.
        assert (await host.get("/api/v1/audit?station=H1"))[0] == 200
        assert (await host.get("/api/v1/audit?station=P1"))[0] == 404
        assert (await host.get("/api/v1/audit"))[0] == 403
        shown = await asyncio.to_thread(forked_cli.run, ["audit", "--station", "P1", "--json",
                                                         "--db", sqlite_url])
        assert shown.returncode == 0, shown.stderr
        [p1] = json.loads(shown.stdout)
        assert p1["actor"] == "operator key ops (api)" and p1["details"]["command"] == "unlock"


async def test_sessions_statements_and_the_audit_trail_export_as_csv(sqlite_url):
    """Issue 33, item 5: the lists an operator takes into a spreadsheet come as CSV that
    parses (UTF-8 with a byte-order mark, one header row), through the API and from the
    console's link with its cookie."""
    import csv
    import io

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        async with simulated(node, "P1", "1.6", meter_interval_s=0.05) as box:
            session = await box.charge(1, "T1", energy_wh=1500)
            await asyncio.wait_for(session.done.wait(), 30)
        await node.gateway.settler.drain()
        operator = Client(url, keys["operator"])
        status, listed = await operator.get("/api/v1/sessions")
        [one] = listed
        assert status == 200 and one["payable_fen"] is not None

        def fetch(path: str, **headers: str) -> tuple[str, str]:
            request = urllib.request.Request(url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.headers["Content-Type"], answer.read().decode("utf-8")

        kind, text = await asyncio.to_thread(
            fetch, "/api/v1/sessions?format=csv", Authorization=f"Bearer {keys['operator']}")
        assert kind.startswith("text/csv") and text.startswith("\ufeff")
        [row] = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
        assert row["id"] == str(one["id"]) and row["station"] == "P1" and row["tag"] == "T1"
        assert row["cost_cny"] == f"{one['payable_fen'] / 100:.2f}" and row["status"] == "completed"
        # The console's link, with the login cookie (what the browser sends).
        status, page = await operator.get("/console/sessions", Cookie=f"cocharge_key={keys['operator']}")
        assert 'id="export-csv"' in page and "/api/v1/sessions?format=csv" in page
        _, again = await asyncio.to_thread(fetch, "/api/v1/sessions?format=csv&station=P1",
                                           Cookie=f"cocharge_key={keys['operator']}")
        assert again == text
        _, ledger_csv = await asyncio.to_thread(
            fetch, "/api/v1/accounts/receivable:T1/statement?format=csv",
            Authorization=f"Bearer {keys['operator']}")
        rows = list(csv.DictReader(io.StringIO(ledger_csv.lstrip("\ufeff"))))
        assert rows and all("balance" in r for r in rows)
        _, audit_csv = await asyncio.to_thread(fetch, "/api/v1/audit?format=csv",
                                               Authorization=f"Bearer {keys['operator']}")
        assert audit_csv.lstrip("\ufeff").startswith("id,at,actor,origin,action")


async def test_a_host_invites_a_neighbour_through_the_api(sqlite_url):
    """Issue 33, item 3: the operator, a host or a property makes an invitation link for a
    member (kept in the audit trail); a member cannot; an unknown member is said so."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        url = base(node)
        status, made = await Client(url, keys["host"]).post("/api/v1/members/T1/invitations")
        assert status == 201 and made["url"].startswith(url) and "/console/join/" in made["url"]
        token = made["url"].rsplit("/", 1)[1]
        status, page = await Client(url, None).get(f"/console/join/{token}",
                                                   **{"Accept-Language": "en"})
        assert status == 200 and "invited to charge as T1" in page
        assert (await Client(url, keys["member"]).post("/api/v1/members/T1/invitations"))[0] == 403
        assert (await Client(url, keys["host"]).post("/api/v1/members/NOPE/invitations"))[0] == 404
        status, rows = await Client(url, keys["operator"]).get("/api/v1/audit?account=member:T1")
        assert [r["action"] for r in rows] == ["invitation"]
        assert rows[0]["actor"] == "host key bob's app (api)"


async def test_a_hosts_bad_settings_and_pairings_are_refused_and_change_nothing(sqlite_url):
    """Issue 33 (bad input): an opening window, a price or a pairing that cannot be is an
    error answer naming it, and nothing is written (rules, tariffs, codes, audit)."""
    from cocharge.store import audit

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        host = Client(base(node), keys["host"])
        for path, body, status, says in [
            ("/api/v1/stations/H1/rules", {"windows": ["someday 25:00-26:00"]}, 400, ""),
            ("/api/v1/stations/H1/rules", {"closed_dates": ["2026-13-01"]}, 400, ""),
            ("/api/v1/stations/H1/rules", {}, 400, "nothing to change"),
            ("/api/v1/stations/H1/rules", {"wat": 1}, 422, "wat"),
            ("/api/v1/stations/H1/price", {"per_kwh": "abc"}, 400, "per_kwh"),
            ("/api/v1/stations/H1/price", {"per_kwh": "-1"}, 400, "per_kwh"),
            ("/api/v1/stations/P1/price", {"per_kwh": "1.20"}, 404, "P1"),
        ]:
            got, answer = await host.put(path, body)
            assert got == status and says in json.dumps(answer), (path, body, got, answer)
        for body, status in [({"station": "bad id/with slash"}, 400), ({"station": "H1"}, 409),
                             ({"station": "N1", "connectors": 0}, 422)]:
            got, answer = await host.post("/api/v1/pairings", body)
            assert got == status, (body, got, answer)
        assert (await Client(base(node), keys["member"]).post(
            "/api/v1/pairings", {"station": "N2"}))[0] == 403
        assert await settle.show_tariffs(node.engine, "H1") == []
        assert (await host.get("/api/v1/stations/H1"))[1]["rules"] == {}
        assert await audit.entries(node.engine) == []


async def test_passkey_requests_that_cannot_be_are_refused_and_keep_nothing(sqlite_url):
    """Issue 33, item 3 (passkeys, bad input): making one needs a signed-in member or a
    valid invitation; an answer that names no challenge of ours, or one already used, is
    refused; another site's page is refused; nothing is kept (no passkey, no key)."""
    import base64

    from sqlalchemy import func, select

    from cocharge.store.schema import api_keys, passkey_challenges, passkeys

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        anyone = Client(base(node), None)
        status, said = await anyone.post("/console/passkeys/options", {"purpose": "login"},
                                         **{"Accept-Language": "en"})
        assert status == 400 and "reached by name" in said["error"]  # browsers refuse an IP
        english = {"Accept-Language": "en", "Host": base(node).replace("http://127.0.0.1",
                                                                        "localhost")}
        status, said = await anyone.post("/console/passkeys/options", {"purpose": "register"},
                                         **english)
        assert status == 400 and "sign in first" in said["error"]
        status, said = await anyone.post("/console/passkeys/options",
                                         {"purpose": "register", "token": "made-up"}, **english)
        assert status == 400 and "not valid" in said["error"]
        status, said = await anyone.post("/console/passkeys/login", b"not json", **english)
        assert status == 400 and "not JSON" in said["error"]
        status, said = await anyone.post("/console/passkeys/login", {"credential": [1, 2]},
                                         **english)
        assert status == 400 and "not readable" in said["error"]
        status, said = await anyone.post("/console/passkeys/options", {"purpose": "login"},
                                         Origin="https://evil.example", **english)
        assert status == 403
        async with node.engine.connect() as conn:
            keys_before = await conn.scalar(select(func.count()).select_from(api_keys))
            assert await conn.scalar(select(func.count()).select_from(passkey_challenges)) == 0

        def answer(challenge: str) -> dict[str, Any]:
            client = json.dumps({"type": "webauthn.get", "challenge": challenge,
                                 "origin": base(node)}).encode()
            return {"credential": {"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                                   "response": {"clientDataJSON": base64.urlsafe_b64encode(
                                       client).decode().rstrip("="),
                                       "authenticatorData": "AAAA", "signature": "AAAA"}}}

        status, said = await anyone.post("/console/passkeys/login", answer("bm90LW91cnM"),
                                         **english)
        assert status == 400 and "expired" in said["error"]  # a challenge we never gave
        status, options = await anyone.post("/console/passkeys/options", {"purpose": "login"},
                                            **english)
        assert status == 200 and options["rpId"] == "localhost" and options["challenge"]
        status, said = await anyone.post("/console/passkeys/login", answer(options["challenge"]),
                                         **english)
        assert status == 400 and "not known here" in said["error"]
        status, said = await anyone.post("/console/passkeys/login", answer(options["challenge"]),
                                         **english)
        assert status == 400 and "expired" in said["error"]  # used up by the first answer
        member = Client(base(node), None)
        status, options = await member.post("/console/passkeys/options", {"purpose": "register"},
                                            Cookie=f"cocharge_key={keys['member']}", **english)
        assert status == 200 and options["user"]["name"] == "T1"
        async with node.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(passkeys)) == 0
            assert await conn.scalar(select(func.count()).select_from(api_keys)) == keys_before


async def test_only_a_member_joins_a_group_and_only_as_itself(sqlite_url):
    """Issue 33 (group links, bad input): the operator cannot join a group through the
    console's form; a group that does not exist is a 404; nothing is written."""
    from datetime import timedelta

    from cocharge.stations import sharing
    from cocharge.store.db import utcnow

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        start = utcnow() + timedelta(days=2)
        group_id = await sharing.create_group(node.engine, "P1", start,
                                              start + timedelta(hours=2), 5, "T1")
        cookie = {"Cookie": f"cocharge_key={keys['operator']}", "Accept-Language": "en"}
        console = Client(base(node), None)
        status, page = await console.get(f"/console/g/{group_id}", **cookie)
        assert status == 200 and "1 of 5 needed" in page and "join-group" not in page

        def post_form(path: str, key: str) -> tuple[int, str]:
            request = urllib.request.Request(base(node) + path, data=b"", method="POST",
                                             headers={"Cookie": f"cocharge_key={key}",
                                                      "Accept-Language": "en"})
            with urllib.request.urlopen(request, timeout=30) as answer:  # follows the 303
                return answer.status, answer.read().decode()

        status, page = await asyncio.to_thread(post_form, f"/console/g/{group_id}/join",
                                               keys["operator"])
        assert "Not joined" in page and "only a member" in page
        assert (await sharing.show_group(node.engine, group_id))["members"] == ["T1"]
        status, page = await console.get(f"/console/g/{group_id + 100}", **cookie)
        assert status == 404


async def test_a_console_page_the_api_refuses_is_the_consoles_error_page(sqlite_url):
    """Every console page shows what the API refused as its error page (HTML, the API's
    status and reason), whichever of its calls refused; the API itself answers JSON."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        console = Client(base(node), None)
        for who, path, reason in (
                ("operator", "/console/sessions/999999", "no session 999999"),
                ("host", "/console/stations/P1", "no station"),  # not bob's
                ("member", "/console/stations/P1/qr", "no station")):
            cookie = {"Cookie": f"cocharge_key={keys[who]}", "Accept-Language": "en"}
            status, page = await console.get(path, **cookie)
            assert status == 404, (path, status)
            assert isinstance(page, str) and "<html" in page and reason in page, (path, page)
        status, answer = await Client(base(node), keys["operator"]).get("/api/v1/sessions/999999")
        assert status == 404 and answer == {"error": "no session 999999"}
