"""A host pairs a new charger by a code (issue 33, item 4): the host makes a code for the
id it chooses (API); the charger, configured with the gateway's URL, that id and the code as
its password, connects: it is registered to the host, booted Accepted, and its password is
rotated at once, so that the code opens nothing any more. Wrong codes count as wrong
passwords; an id that is taken gets no code."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest

from cocharge.api.keys import create_key
from cocharge.node import running_node
from cocharge.stations import registry
from tests.conftest import settings, simulated, until
from tests.gateway.test_passwords import attempt


def post(url: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.mark.parametrize("protocol", ["1.6", "2.0.1"])
async def test_a_host_pairs_a_new_charger_with_a_code(sqlite_url, protocol):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        assert node.api is not None
        await registry.add_station(node.engine, registry.NewStation("HOME1", owner="bob"))
        host = await create_key(node.engine, "bob's app", "host", "bob")
        status, made = await asyncio.to_thread(post, f"{node.api.url}/api/v1/pairings", host,
                                               {"station": "NEW9", "connectors": 2,
                                                "max_power_kw": 7})
        assert status == 201, made
        code = made["code"]
        assert len(code) == 9 and code[4] == "-" and made["owner"] == "bob"
        assert made["ocpp_url"].endswith(f":{node.gateway.port}/ocpp/")
        # Guessing: a wrong code registers nothing (and counts against the address).
        await attempt(node, "NEW9", "AAAA-AAAA")
        assert "NEW9" not in {s["id"] for s in await registry.list_stations(node.engine)}
        async with simulated(node, "NEW9", protocol, password=code, connectors=2) as box:
            async def in_use() -> bool:  # reconnected with its new password: the only one
                return "in use" in [e["details"]["step"] for e in
                                    await registry.list_station_events(
                                        node.engine, "NEW9", "password_rotated")]

            await until(in_use, 20)
            assert box.password_changes == 1 and box.config.password != code
            [station] = [s for s in await registry.list_stations(node.engine)
                         if s["id"] == "NEW9"]
            assert station["owner"] == "bob" and station["connectors"] == 2
            assert station["max_power_kw"] == 7
            assert box.registration == "Accepted"
            # The code opens nothing now, and makes no other station.
            assert (await attempt(node, "NEW9", code))[0] in (401, 429)
        events = [e["kind"] for e in await registry.list_station_events(node.engine, "NEW9")]
        assert "paired" in events
        status, again = await asyncio.to_thread(post, f"{node.api.url}/api/v1/pairings", host,
                                                {"station": "NEW9"})
        assert status == 409 and "already registered" in again["error"]
