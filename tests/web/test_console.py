"""The web console in a real headless Chromium, against a running node with simulated
chargers: each role logs in and sees what it may; the fleet page follows a station starting
to charge without a reload; a command sent from a station page reaches the charger."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from cocharge.node import running_node
from tests.api.test_api import Client, base, fleet
from tests.conftest import settings, simulated, until


async def test_operator_watches_the_fleet_live_and_commands_a_station(sqlite_url,
                                                                      browser_factory):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        assert await browser.path() == "/console/"
        assert "ops · operator" in await browser.text("#who")
        assert "P1" in await browser.text("#fleet") and "offline" in await browser.text(
            "tr[data-station=P1] .online")
        async with simulated(node, "P1", "1.6", meter_interval_s=0.2) as box:
            # The page was loaded before the charger connected: it updates by itself.
            await browser.wait_for("tr[data-station=P1] .online", "online")
            await browser.wait_for("tr[data-station=P1] .status", "1: Available")
            assert "1 of 3 online" in await browser.text("h1")

            await browser.open("/console/stations/P1")
            # A form per command: only the chosen command's fields show.
            await browser.select("#command", "reset")
            assert await browser.run(lambda: [e.get_attribute("data-field") for e in
                                              browser.driver.find_elements(
                                                  "css selector", "label[data-field]")
                                              if e.is_displayed()]) == ["hard"]
            await browser.select("#command", "start")
            shown = await browser.run(lambda: [e.get_attribute("data-field") for e in
                                               browser.driver.find_elements(
                                                   "css selector", "label[data-field]")
                                               if e.is_displayed()])
            assert shown == ["tag", "connector_id"]
            await browser.fill("input[name=tag]", "T1")
            await browser.fill("input[name=connector_id]", "1")
            await browser.click("#send")
            assert "start: Accepted" in await browser.wait_for("#result", "Accepted")
            # Who sent it (the audit trail): this console's key, from this browser's address.
            sent = await browser.text("#audit tbody tr")
            assert "(console)" in sent and "127.0.0.1" in sent and "start" in sent
            await asyncio.wait_for(box.sessions[1].started.wait(), 10)
            await browser.wait_for("#frames", "RemoteStartTransaction")
            await browser.wait_for("#station-status", "Charging")
            await browser.wait_for("#station-sessions", "kWh")
            await browser.screenshot("station")

            await browser.open("/console/")
            live = await browser.wait_for("tr[data-station=P1] .sessions", "T1")
            assert "kWh" in live and "CNY" in live
            await browser.screenshot("fleet")

            # A command the station refuses is shown as refused, and nothing else breaks.
            await browser.open("/console/stations/P1")
            await browser.select("#command", "share-lock")
            await browser.fill("input[name=connector_id]", "1")
            await browser.fill("input[name=state]", "sideways")
            await browser.click("#send")
            assert "locked or unlocked" in await browser.wait_for("#result", "sideways")

            # A diagnostics request (sent through the API) shows on the station page.
            asked = await node.operator.answer({"command": "get-diagnostics", "station": "P1",
                                                "args": {}})
            assert asked["accepted"], asked
            await browser.open("/console/stations/P1")
            assert "Firmware and log requests" in await browser.text("main")
            for _ in range(50):
                await browser.open("/console/stations/P1")
                if "Uploaded" in await browser.text("main"):
                    break
                await asyncio.sleep(0.2)
            assert "P1-" in await browser.text("main")  # the uploaded file's name

            await browser.open("/console/sessions?active=yes")
            assert "T1" in await browser.text("table")
            box.request_stop(box.sessions[1].tx_id, "Local")
            await asyncio.wait_for(box.sessions[1].done.wait(), 10)
        await browser.open("/console/")
        await browser.wait_for("tr[data-station=P1] .online", "offline")

        # The operator changes P1's tariff from its page (the checks of the API's and the
        # CLI's), and exports the sessions as CSV from the sessions page's link.
        from cocharge.settlement import settle
        from cocharge.stations import sharing

        await browser.open("/console/stations/P1")
        before = await settle.show_tariffs(node.engine, "P1")
        await browser.fill("textarea[name=windows]", "mon-fri 07:00-22:00")
        await browser.fill("input[name=per_kwh]", "abc")
        await browser.click("#save-settings")
        assert "per_kwh" in await browser.wait_for("#settings-result.bad", "per_kwh")
        assert await settle.show_tariffs(node.engine, "P1") == before  # nothing written,
        assert "07:00" not in json.dumps(await sharing.show_rules(node.engine, "P1"))  # at all
        await browser.fill("input[name=per_kwh]", "1.85")
        await browser.click("#save-settings")
        await browser.wait_for("#settings-result", "Saved")
        tariffs = await settle.show_tariffs(node.engine, "P1")
        assert len(tariffs) == len(before) + 1 and "1.85" in json.dumps(tariffs[-1]["tariff"])
        # The same in Chinese: the refusal in Chinese, values kept, nothing written.
        await browser.open("/console/stations/P1?lang=zh")
        await browser.fill("input[name=per_kwh]", "1,95")
        await browser.click("#save-settings")
        said = await browser.wait_for("#settings-result.bad", "请只用数字写金额")
        assert "'1,95'" in said and "write the amount" not in said
        assert len(await settle.show_tariffs(node.engine, "P1")) == len(tariffs)
        await browser.fill("input[name=per_kwh]", "1.95")
        await browser.click("#save-settings")
        await browser.wait_for("#settings-result", "已保存")
        assert "1.95" in json.dumps((await settle.show_tariffs(node.engine, "P1"))[-1]["tariff"])
        await browser.open("/console/sessions?lang=en")
        exported = await browser.run(browser.driver.execute_async_script, """
            const done = arguments[arguments.length - 1];
            fetch(document.getElementById("export-csv").href, {credentials: "same-origin"})
              .then(r => r.text()).then(done);""")
        rows = list(csv.DictReader(io.StringIO(exported.lstrip("\ufeff"))))
        assert [r["tag"] for r in rows if r["station"] == "P1"] == ["T1"], exported[:300]
        # The session's own page: its power and state of charge drawn from its meter values.
        await browser.click(f"a[href='/console/sessions/{rows[0]['id']}']")
        await browser.wait_for("#session h1", str(rows[0]["id"]))
        lines = await browser.run(lambda: [
            (e.get_attribute("class"), len(e.get_attribute("points").split()))
            for e in browser.driver.find_elements("css selector", "#session-chart polyline")])
        assert [c for c, _ in lines] == ["line power", "line soc"], lines
        assert all(n >= 2 for _, n in lines), lines
        assert "Power (kW, left)" in await browser.text("#session-chart")  # the page's language
        await browser.screenshot("session")
        await browser.open("/api/docs")
        assert "/api/v1/stations/{station_id}/commands" in await browser.text("table")


async def test_property_and_host_see_their_own_dashboards(sqlite_url, browser_factory):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        async with simulated(node, "P1", "2.0.1", meter_interval_s=0.1) as box:
            session = await box.charge(1, "T1", energy_wh=3_000)
            await asyncio.wait_for(session.done.wait(), 20)
        browser = browser_factory(node.api.url)
        await browser.login(keys["property"])
        assert [r.split()[0] for r in await browser.all_text("#fleet tbody tr")] == ["P1"]
        await browser.open("/console/stations/P2")
        assert "no station 'P2'" in await browser.text("main")

        await browser.open("/console/dashboard")

        async def earned() -> str:
            return await browser.text("#kpi-earned")
        shown = await browser.wait_for("#kpi-sessions", "1")
        assert shown == "1" and (await earned()) != "0.00 CNY"
        assert await browser.count("svg.chart") == 2
        assert await browser.count("svg.chart rect.heat") == 168
        await browser.screenshot("dashboard")
        assert "Earnings by day (CNY)" in " ".join(await browser.all_text("svg.chart text"))
        # The same in Chinese, its charts too (their titles, the days of the week).
        await browser.open("/console/dashboard?lang=zh")
        assert (await earned()).startswith("¥")
        charts = " ".join(await browser.all_text("svg.chart text"))
        assert "每日收入（元）" in charts and "周一" in charts and "Mon" not in charts
        await browser.open("/console/dashboard?lang=en")  # (the language cookie is shared)

        host = browser_factory(node.api.url)
        await host.login(keys["host"])
        assert [r.split()[0] for r in await host.all_text("#fleet tbody tr")] == ["H1"]
        await host.open("/console/dashboard")
        assert await host.text("#kpi-sessions") == "0"  # P1's session is not bob's
        await host.open("/console/dashboard?days=abc")  # a hand-edited address: a page
        assert "give a number of days" in await host.text(".error")
        await host.open("/favicon.ico")
        assert "<svg" in await host.run(host.driver.execute_script,
                                        "return document.documentElement.outerHTML")
        await host.open("/console/calculator")
        await host.fill("input[name=power_kw]", "7")
        await host.fill("input[name=price]", "1.20")
        await host.fill("textarea[name=windows]", "mon-fri 19:00-23:00")
        await host.click("#estimate")
        result = await host.wait_for("#estimate-result", "Revenue a month")
        assert "CNY" in result
        assert await host.count("svg.chart rect.bar") == 168
        await host.screenshot("calculator")
        await host.fill("input[name=price]", "1e9")
        await host.click("#estimate")
        assert "price" in await host.wait_for(".error", "price")


async def book(browser: Any, station: str, day: str) -> None:
    """The member's booking form: 19:00-20:00 of `day` at `station`, sent."""
    await browser.run(browser.driver.execute_script, f"""
        document.querySelector('input[name=start]').value = '{day}T19:00';
        document.querySelector('input[name=end]').value = '{day}T20:00';""")
    await browser.fill("input[name=station]", station)
    await browser.click("form[action='/console/me/bookings'] button")


async def test_a_member_books_and_sees_only_its_own(sqlite_url, browser_factory):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login("cck_00000000_wrong")
        assert "not valid" in await browser.text(".error")
        await browser.login(keys["member"])
        assert await browser.path() == "/console/me"
        await book(browser, "P1", "2030-01-01")
        assert "Booked" in await browser.wait_for("p.result", "Booked")
        assert "P1:1" in await browser.text("table") and "booked" in await browser.text("table")
        await browser.screenshot("member")
        await browser.click("form[action$='/cancel'] button")
        assert "cancelled" in await browser.wait_for("p.result", "cancelled")
        assert await browser.count("p.result.bad") == 0  # a success looks like one
        await book(browser, "NOPE", "2030-01-02")
        assert "Not booked" in await browser.wait_for("p.result.bad", "Not booked")

        await browser.open("/console/stations/P1")  # as a driver sees it: no frames, no commands
        assert await browser.count("#frames") == 0 and await browser.count("#command") == 0
        await browser.open("/console/?q=")
        assert await browser.count("#fleet tbody tr") == 3
        assert "alice" not in await browser.text("#fleet")


async def test_the_console_fits_a_phone(sqlite_url, browser_factory):
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.run(browser.driver.set_window_size, 390, 844)
        for path in ("/console/", "/console/dashboard", "/console/stations/P1",
                     "/console/calculator?price=1.2"):
            await browser.open(path)
            wide = await browser.run(browser.driver.execute_script,
                                     "return document.documentElement.scrollWidth")
            inner = await browser.run(browser.driver.execute_script, "return window.innerWidth")
            assert wide <= inner, (path, wide, inner)
        await browser.open("/console/")
        await browser.screenshot("phone", width=390)


async def test_the_console_in_chinese_and_local_time(sqlite_url, browser_factory):
    """Issue 33, item 1: the language switch on every page (remembered), the member's page
    and booking in Chinese, a booking typed for 19:00 shown at 19:00 with the zone, amounts
    as yuan; the operator's fleet in Chinese, kept in Chinese by the page's own updates."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["member"])
        assert "My charging" in await browser.text("header")  # the browser asks for English
        await browser.click("#lang-zh")
        assert "我的充电" in await browser.wait_for("header", "我的充电")
        assert await browser.run(browser.driver.execute_script,
                                 "return document.documentElement.lang") == "zh-CN"
        assert "¥" in await browser.text("#wallet")
        await book(browser, "P1", "2030-01-01")
        assert "预约成功" in await browser.wait_for("p.result", "预约成功")
        assert await browser.text("td.from") == "2030-01-01 19:00 +08:00"
        assert await browser.text("td.to") == "2030-01-01 20:00 +08:00"
        assert "Asia/Shanghai (UTC+08:00)" in await browser.text("main")
        await browser.screenshot("member-zh")
        await browser.open("/console/me")  # remembered
        assert "我的充电记录" in await browser.text("main")
        await browser.click("#lang-en")
        assert "My sessions" in await browser.wait_for("main", "My sessions")
        assert await browser.text("td.from") == "2030-01-01 19:00 +08:00"

        operator = browser_factory(node.api.url)
        await operator.login(keys["operator"])
        await operator.open("/console/?lang=zh")
        assert "全部充电桩" in await operator.text("h1")
        await asyncio.sleep(3.5)  # the page's own update has run
        shown = await operator.text("#fleet")
        assert "离线" in shown or "在线" in shown
        assert "offline" not in shown and "online" not in shown
        await operator.screenshot("fleet-zh")


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_a_host_changes_its_hours_and_price_and_its_charger_follows(sqlite_url,
                                                                           browser_factory,
                                                                           lang):
    """Issue 33, item 4: a host opens its own station in the console, sets its opening hours
    to tomorrow only and a new price; the charger's share lock closes its bay now (outside
    the hours), new sessions are priced at the new price, and the change is kept with who
    made it. Another's station cannot be changed."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    from cocharge.settlement import settle
    from cocharge.store import audit
    from cocharge.store.db import utcnow

    async with running_node(sqlite_url, settings(api_port=0, control_interval_s=0.3)) as node:
        keys = await fleet(node)
        assert node.api is not None
        async with simulated(node, "H1", "2.0.1", meter_interval_s=0.1) as box:
            browser = browser_factory(node.api.url)
            await browser.login(keys["host"])
            await browser.open(f"/console/stations/H1?lang={lang}")
            local = utcnow().replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo("Asia/Shanghai"))
            tomorrow = (local + timedelta(days=1)).strftime("%a").lower()
            await browser.fill("textarea[name=windows]", f"{tomorrow} 10:00-11:00")
            await browser.fill("input[name=per_kwh]", "2.40")
            await browser.click("#save-settings")
            saved = {"en": "Saved", "zh": "已保存"}[lang]
            assert saved in await browser.wait_for("#settings-result", saved)
            await until(lambda: asyncio.sleep(0, box.hw[1].bay_locked), 10)
            [current] = [t for t in await settle.show_tariffs(node.engine, "H1")][-1:]
            assert "2.40" in json.dumps(current, default=str)
            assert await browser.run(browser.driver.execute_script,
                                     "return document.querySelector('textarea[name=windows]').value"
                                     ) == f"{tomorrow} 10:00-11:00"
            # Whom it is shared with, and the days it is closed: a bad date refused on the
            # page, nothing of the form written; then kept, and the sharing rules apply.
            from cocharge.stations import sharing

            await browser.fill("textarea[name=closed_dates]", "25/12")
            await browser.fill("input[name=allowed_tags]", "T1, T9")
            await browser.click("#save-settings")
            said = await browser.wait_for("#settings-result.bad", "25/12")
            assert {"en": "YYYY-MM-DD", "zh": "请写成 YYYY-MM-DD"}[lang] in said
            assert (await sharing.show_rules(node.engine, "H1"))["station"]["allowed_tags"] == []
            await browser.fill("textarea[name=closed_dates]", "2030-12-25")
            await browser.fill("input[name=allowed_tags]", "T1, T9")
            await browser.fill("input[name=min_credit]", "10")
            await browser.click("#save-settings")
            await browser.wait_for("#settings-result", saved)
            kept = (await sharing.show_rules(node.engine, "H1"))["station"]
            assert (kept["allowed_tags"], kept["closed_dates"], kept["min_credit"],
                    kept["windows"]) == (["T1", "T9"], ["2030-12-25"], 10,
                                         [f"{tomorrow} 10:00-11:00"])
            assert await browser.run(lambda: browser.driver.find_element(
                "css selector", "input[name=allowed_tags]").get_attribute("value")) == "T1, T9"
            done = await audit.entries(node.engine, "H1")
            assert {e["action"] for e in done} >= {"rules", "price"}
            assert all(e["actor"] == "host key bob's app (console)" for e in done
                       if e["action"] in ("rules", "price"))
            # The QR code to stick on each connector, to print from the console: the code of
            # the connector's page (the one `cocharge station qr` writes).
            import segno

            await browser.click("#qr-link")
            [caption] = await browser.all_text("figure.qr figcaption")
            url = f"{node.api.url}/console/c/H1/1"
            assert caption.endswith(url) and {"en": "Scan to charge", "zh": "扫码充电"}[lang] \
                in caption
            drawn = await browser.run(lambda: browser.driver.find_element(
                "css selector", "figure.qr svg path").get_attribute("d"))
            assert drawn in segno.make(url, error="m").svg_inline(scale=6, border=4)
            await browser.screenshot(f"qr-{lang}")
            # Another's station: not this key's to change, nor its codes to print.
            await browser.open("/console/stations/P1")
            assert await browser.count("#settings") == 0
            await browser.open("/console/stations/P1/qr")
            assert await browser.count("figure.qr") == 0
        # A new charger of the host's, paired by the code the console shows.
        await browser.open("/console/dashboard")
        await browser.fill("#pair input[name=station]", "NEW7")
        await browser.click("#pair-new")
        code = await browser.wait_for("#pair-code", "-")
        async with simulated(node, "NEW7", "1.6", password=code) as new:
            await until(lambda: asyncio.sleep(0, new.registration == "Accepted"), 10)
        from cocharge.stations import registry

        [paired] = [x for x in await registry.list_stations(node.engine) if x["id"] == "NEW7"]
        assert paired["owner"] == "bob"


def passkey_device(browser: Any) -> None:
    """The phone's screen lock: Chromium's virtual authenticator (WebDriver), which keeps
    resident keys and verifies its user."""
    from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions

    device = VirtualAuthenticatorOptions()
    device.protocol = VirtualAuthenticatorOptions.Protocol.CTAP2
    device.transport = VirtualAuthenticatorOptions.Transport.INTERNAL
    device.has_resident_key = True
    device.has_user_verification = True
    device.is_user_verified = True
    browser.driver.add_virtual_authenticator(device)


DRIVER_WORDS = {"en": {"start": "Start charging", "money": "CNY", "passkeys": "Passkeys: 1",
                       "kwh": "kWh"},
                "zh": {"start": "开始充电", "money": "¥", "passkeys": "通行密钥：1",
                       "kwh": "千瓦时"}}


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_a_driver_scans_the_qr_code_signs_in_with_a_passkey_and_charges(
        sqlite_url, browser_factory, tmp_path, lang):
    """Issue 33, items 2 and 3: a member accepts the invitation with a passkey (the phone's
    screen lock); later the QR code of a connector (`cocharge station qr`) opens its page on
    the phone (390 px); the driver signs in with the passkey, starts charging, sees the
    energy and the cost rise without reloading, stops, and sees the bill. In Chinese and in
    English. The console is reached by name: browsers refuse passkeys on an IP address."""
    from tests import forked_cli

    words = DRIVER_WORDS[lang]
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await fleet(node)
        assert node.api is not None
        site = node.api.url.replace("127.0.0.1", "localhost")
        qr = tmp_path / "P1-1.svg"
        made = await asyncio.to_thread(forked_cli.run, [
            "station", "qr", "P1", "--connector", "1", "--out", str(qr), "--base-url",
            site, "--db", sqlite_url])
        assert made.returncode == 0, made.stderr
        url = f"{site}/console/c/P1/1"
        assert made.stdout.strip() == f"{qr}: QR code of {url}"
        assert qr.read_text().lstrip().startswith(("<?xml", "<svg"))
        invited = await asyncio.to_thread(forked_cli.run, [
            "member", "invite", "T2", "--base-url", site, "--db", sqlite_url])
        assert invited.returncode == 0, invited.stderr
        browser = browser_factory(site)
        passkey_device(browser)
        await browser.open(invited.stdout.strip().removeprefix(site) + f"?lang={lang}")
        await browser.click("#passkey-join")
        await browser.wait_for("#who", "T2")
        assert await browser.path() == "/console/me"
        assert await browser.text("#passkeys") == words["passkeys"]
        await browser.logout()  # log out: the phone keeps its passkey
        from cocharge.settlement import grants  # the car came with a membership (OEM)

        await grants.grant(node.engine, "T2", brand="BYD", vin="LGXCE6CC0P0000001")
        async with simulated(node, "P1", "2.0.1", meter_interval_s=0.2, speed=60) as box:
            await browser.run(browser.driver.set_window_size, 390, 844)
            await browser.open("/console/c/P1/1")  # what the phone opens from the code
            assert await browser.path() == "/console/login"
            await browser.click("#passkey-login")
            await browser.wait_for("#driver", words["start"])
            assert await browser.path() == "/console/c/P1/1"
            # Beside the button: what the driver may spend, its membership, its free energy.
            assert words["money"] in await browser.text("#available")
            assert await browser.count("#membership") == 1
            assert (await browser.text("#quota")).endswith("/ 50 kWh")
            await browser.click("#start")
            session = await until(lambda: asyncio.sleep(0, box.sessions.get(1)))
            await asyncio.wait_for(session.started.wait(), 15)
            first = await browser.wait_for("#live-kwh", "kWh")
            async with asyncio.timeout(20):  # the page's own updates, no reload
                while (await browser.text("#live-kwh")) == first:
                    await asyncio.sleep(0.3)
            assert await browser.count("#live-cost") == 1
            wide = await browser.run(browser.driver.execute_script,
                                     "return document.documentElement.scrollWidth")
            assert wide <= 390
            await browser.screenshot("driver" if lang == "en" else "driver-zh", 390)
            await browser.click("#stop")
            await asyncio.wait_for(session.done.wait(), 15)
            async with asyncio.timeout(20):  # the bill, once the session is settled
                while (words["money"] not in (await browser.text("main"))
                       or not await browser.count("#bill")):
                    await asyncio.sleep(0.5)
                    await browser.open("/console/c/P1/1")
            assert words["kwh"] in await browser.text("#bill")


async def test_a_driver_is_told_in_chinese_why_a_start_is_refused(sqlite_url,
                                                                  browser_factory):
    """Issue 33, items 1 and 2: the phone says why a start cannot be, in the reader's
    language, before anything is sent: not enough money (the gateway's start minimum), the
    charger offline (and the start is not queued for hours later), the owner's hours
    (a rule changed through the API applies at once)."""
    from sqlalchemy import func, select

    from cocharge.api.keys import create_key
    from cocharge.settlement import funds
    from cocharge.store.schema import pending_commands

    async with running_node(sqlite_url, settings(api_port=0, start_minimum_fen=100)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(await create_key(node.engine, "t2 phone", "member", "T2"))
        await browser.open("/console/c/P1/1?lang=zh")
        await browser.click("#start")
        said = await browser.wait_for("#driver-result.bad", "余额不足")
        assert "请先充值" in said and "not enough" not in said
        await funds.top_up(node.engine, "T2", 5000, "pay-t2")
        await browser.click("#start")
        said = await browser.wait_for("#driver-result.bad", "离线")
        async with node.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(pending_commands)) == 0
        async with simulated(node, "P1", "2.0.1", meter_interval_s=0.2) as box:
            await until(lambda: asyncio.sleep(0, "P1" in node.gateway.connections))
            ops = Client(base(node), keys["operator"])
            status, _ = await ops.put("/api/v1/stations/P1/rules",
                                       {"windows": ["mon 03:00-03:01"]})
            assert status == 200
            await browser.open("/console/c/P1/1")
            await browser.click("#start")
            said = await browser.wait_for("#driver-result.bad", "不在开放时间内")
            await browser.screenshot("driver-refused-zh", 390)
            async with asyncio.timeout(10):  # closed (its share lock follows): not shown
                while not await browser.count("h1 .off"):  # in the colour of "open"
                    await asyncio.sleep(0.2)
                    await browser.open("/console/c/P1/1")
            assert "不可用" in await browser.text("h1 .off")
            assert "mon 03:00-03:01" in said and 1 not in box.sessions


async def test_a_driver_books_by_tapping_a_free_slot(sqlite_url, browser_factory):
    """Issue 33, item 2: the connector's page lists the next hours the member could book
    (the booking's own checks: open, shared with it, free); one tap books one, in local
    time, and it leaves the list; a station whose owner takes no bookings lists none."""
    from cocharge.api.keys import create_key
    from cocharge.stations import sharing

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(await create_key(node.engine, "t2 phone", "member", "T2"))
        await browser.open("/console/c/P1/1?lang=en")
        slots = await browser.all_text("#slots button")
        assert len(slots) == 6 and all(len(s) == 22 for s in slots), slots  # date HH:MM–HH:MM
        await browser.click("#slots li:nth-child(2) button")
        assert "Booked" in await browser.wait_for("#driver-result", "Booked")
        assert await browser.path() == "/console/c/P1/1"
        booked = [b for b in await sharing.list_bookings(node.engine, "P1") if b["tag"] == "T2"]
        assert len(booked) == 1
        local = i18n_local(booked[0]["from"])
        assert slots[1].startswith(local), (slots[1], local)
        assert slots[1] not in await browser.all_text("#slots button")  # taken now
        await sharing.set_rules(node.engine, "P1", 0, {"bookings": False})
        await browser.open("/console/c/P1/1")
        assert await browser.count("#slots") == 0


def i18n_local(iso: str) -> str:
    """A UTC ISO time as the console shows it (Asia/Shanghai): YYYY-MM-DD HH:MM."""
    from cocharge.web import i18n

    return i18n.local_input(iso).replace("T", " ")


async def test_a_member_invited_by_link_signs_in_with_phone_and_password(sqlite_url,
                                                                          browser_factory):
    """Issue 33, item 3 (phone and password): the operator's invitation link (`cocharge
    member invite`) makes the member's login; the member is signed in, and signs in again
    later with the phone number and password; a used link, a wrong password and the two
    passwords differing are refused with the reason."""
    from tests import forked_cli

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await fleet(node)
        assert node.api is not None
        made = await asyncio.to_thread(forked_cli.run, [
            "member", "invite", "T2", "--base-url", node.api.url, "--db", sqlite_url])
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip()
        assert link.startswith(f"{node.api.url}/console/join/") and "works once" in made.stderr
        path = link.removeprefix(node.api.url)
        browser = browser_factory(node.api.url)
        await browser.open(path)
        assert "T2" in await browser.text("main")
        async def submit(button: str, **fields: str) -> None:
            for name, value in fields.items():
                await browser.fill(f"#{name}", value)
            await browser.click(button)

        await submit("#join", phone="+86 138 0013 8000", password="neighbour-2026",
                     again="neighbour-2025")
        assert "differ" in await browser.wait_for(".error", "differ")
        await submit("#join", phone="+86 138 0013 8000", password="neighbour-2026",
                     again="neighbour-2026")
        await browser.wait_for("#who", "T2")
        assert await browser.path() == "/console/me"
        await browser.logout()  # log out
        await browser.open(path)
        assert "used already" in await browser.text("main")
        await browser.open("/console/login")
        await submit("#login-phone", phone="+8613800138000", password="wrong-password")
        assert "Wrong phone number or password" in await browser.wait_for(".error", "Wrong")
        await submit("#login-phone", phone="+8613800138000", password="neighbour-2026")
        await browser.wait_for("#who", "T2")
        assert await browser.path() == "/console/me"


async def test_a_host_invites_a_neighbour_from_the_console_with_a_qr_code(sqlite_url,
                                                                         browser_factory):
    """Issue 33, item 3 (an invitation from a host, as a link or a QR code): the host makes
    the invitation on its dashboard; the page shows the link and its code (the code of that
    link); the neighbour opens it and makes its login; an unknown tag is refused with the
    reason, in Chinese."""
    import segno

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        host = browser_factory(node.api.url)
        await host.login(keys["host"])
        await host.open("/console/dashboard?lang=zh")
        await host.fill("#invite input[name=tag]", "NOBODY")
        await host.click("#invite-new")
        assert "请先添加会员" in await host.wait_for("p.error", "NOBODY")
        await host.open("/console/dashboard?lang=en")
        await host.fill("#invite input[name=tag]", "T2")
        await host.click("#invite-new")
        link = await host.wait_for("#invitation-url", "/console/join/")
        assert link.startswith(f"{node.api.url}/console/join/")
        drawn = await host.run(lambda: host.driver.find_element(
            "css selector", "#invitation figure.qr svg path").get_attribute("d"))
        assert drawn in segno.make(link, error="m").svg_inline(scale=6, border=4)
        neighbour = browser_factory(node.api.url)
        await neighbour.open(link.removeprefix(node.api.url))
        for name, value in (("phone", "13900139000"), ("password", "neighbour-2026"),
                            ("again", "neighbour-2026")):
            await neighbour.fill(f"#{name}", value)
        await neighbour.click("#join")
        await neighbour.wait_for("#who", "T2")
        entries = [e for e in (await Client(base(node), keys["operator"]).get(
            "/api/v1/audit?account=member:T2"))[1] if e["action"] == "invitation"]
        assert [e["actor"] for e in entries] == ["host key bob's app (console)"]


async def test_a_neighbour_joins_a_group_from_its_link(sqlite_url, browser_factory):
    """Issue 33, item 2 (group invitations by link): `cocharge group create` prints the link;
    a member opens it (here in Chinese), sees where, when and how many, joins; the group
    forms and the member's slot is booked at the local time typed. An operator has no Join;
    an unknown group is said so."""
    from datetime import timedelta

    from cocharge.api.keys import create_key
    from cocharge.stations import registry, sharing
    from cocharge.store.db import utcnow
    from tests import forked_cli

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        for tag in ("M3", "M4", "M5"):
            await registry.add_member(node.engine, f"neighbour {tag}", tag, None)
        day = (utcnow() + timedelta(days=3)).strftime("%Y-%m-%d")
        made = await asyncio.to_thread(forked_cli.run, [
            "group", "create", "--station", "P1", "--slot", f"{day}T19:00-21:00", "--min", "5",
            "--initiator", "T1", "--base-url", node.api.url, "--db", sqlite_url])
        assert made.returncode == 0, made.stderr
        link = made.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1]
        assert link.startswith(f"{node.api.url}/console/g/")
        group_id = int(link.rsplit("/", 1)[1])
        for tag in ("M3", "M4", "M5"):
            await sharing.join_group(node.engine, group_id, tag)
        browser = browser_factory(node.api.url)
        await browser.login(await create_key(node.engine, "t2 phone", "member", "T2"))
        await browser.open(f"/console/g/{group_id}?lang=zh")
        assert await browser.text("#group-count") == "已有 4 人，需要 5 人"
        assert "19:00" in await browser.text("#group .from")
        await browser.click("#join-group")
        assert "已成团" in await browser.wait_for("#group-result", "已加入")
        assert await browser.text("#group-count") == "已有 5 人，需要 5 人"
        assert await browser.count("#joined") == 1
        await browser.screenshot("group-zh", 390)
        await browser.open("/console/me")  # T2's share of the slot, in local time
        share = await browser.text("table tbody tr")
        times = re.findall(rf"{day} (\d\d:\d\d) \+08:00", share)
        assert "P1:1" in share and len(times) == 2 and "19:00" <= times[0] < times[1] <= "21:00"
        shown = await sharing.show_group(node.engine, group_id)
        assert shown["status"] == "formed" and "T2" in shown["members"]
        assert any(line.startswith("T2: connector") for line in shown["bookings"])
        await browser.logout()  # the operator cannot join as anybody
        await browser.login(keys["operator"])
        await browser.open(f"/console/g/{group_id}?lang=en")
        assert await browser.count("#join-group") == 0
        await browser.open(f"/console/g/{group_id + 100}")
        assert f"group {group_id + 100}" in await browser.text("main")


async def test_stations_near_me_sorted_by_the_phones_position(sqlite_url, browser_factory,
                                                              tmp_path):
    """Issue 33, item 2: stations get a place (`station update --lat --lon --address`, the
    CSV import too: a bad latitude refused, nothing imported); the member's "near me" page
    lists them with price, hours and state, sorted by distance from the phone's position
    (the browser's geolocation, set here through Chromium's DevTools), with a map link."""
    from cocharge.api.keys import create_key
    from tests import forked_cli

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        await fleet(node)
        assert node.api is not None
        for sid, lat, lon, address in (("P1", "31.2400", "121.4900", "外滩 1 号"),
                                       ("P2", "31.2310", "121.4740", "人民广场 2 号")):
            done = await asyncio.to_thread(forked_cli.run, [
                "station", "update", sid, "--lat", lat, "--lon", lon, "--address", address,
                "--db", sqlite_url])
            assert done.returncode == 0, done.stderr
        half = await asyncio.to_thread(forked_cli.run, [
            "station", "update", "H1", "--lat", "31.2", "--db", sqlite_url])
        assert half.returncode == 2 and "together" in half.stderr
        bad = tmp_path / "bad.csv"
        bad.write_text("id,lat,lon,address\nN1,95,121,nowhere\nN2,31.2,121.4,ok\n")
        refused = await asyncio.to_thread(forked_cli.run, [
            "station", "import", str(bad), "--db", sqlite_url])
        assert refused.returncode == 2 and "line 2" in refused.stderr and "latitude" in refused.stderr
        good = tmp_path / "good.csv"
        good.write_text("id,lat,lon,address\nN2,31.2000,121.4000,far away\n")
        assert (await asyncio.to_thread(forked_cli.run, [
            "station", "import", str(good), "--db", sqlite_url])).returncode == 0
        from cocharge.settlement import settle
        from cocharge.settlement.tariff import simple_tariff

        await settle.set_tariff(node.engine, "P2", 0, simple_tariff(Decimal("1.35")))
        browser = browser_factory(node.api.url)
        await browser.run(browser.driver.execute_cdp_cmd, "Browser.grantPermissions", {
            "permissions": ["geolocation"], "origin": node.api.url})
        await browser.run(browser.driver.execute_cdp_cmd, "Emulation.setGeolocationOverride",
                          {"latitude": 31.2304, "longitude": 121.4737, "accuracy": 10})
        await browser.login(await create_key(node.engine, "t2 phone", "member", "T2"))

        async def near(lang: str) -> None:
            await browser.open(f"/console/near?lang={lang}")
            # the script comes back with the phone's position (to 2 decimals, ~1 km), and
            # the server's nearest stations get their exact distances
            async with asyncio.timeout(10):
                while "lat=31.23&lon=121.47" not in await browser.run(
                        lambda: browser.driver.current_url):
                    await asyncio.sleep(0.1)
                while not (await browser.count("#near li .distance") and "km" in await browser.text(
                        "#near li .distance")):
                    await asyncio.sleep(0.1)

        await near("zh")
        order = await browser.run(lambda: [e.get_attribute("data-station") for e in
                                           browser.driver.find_elements("css selector",
                                                                        "#near li")])
        assert order == ["P2", "P1", "N2"]  # 0.1 km, 1.9 km, 7.8 km from the phone
        first = await browser.text("#near li")
        assert "0.1 km" in first and "人民广场 2 号" in first and "全天" in first
        assert await browser.text("#near li .price") == "1.35 元/千瓦时"  # its own price, now, in Chinese
        link = await browser.run(lambda: browser.driver.find_element(
            "css selector", "#near li a.map").get_attribute("href"))
        assert link.startswith("https://uri.amap.com/marker?position=121.474,31.231")
        await browser.screenshot("near-zh", 390)
        await near("en")
        assert await browser.text("#near li .price") == "1.35 yuan/kWh"
        assert await browser.text("#near-count") == "The 3 stations nearest to you."
        await browser.screenshot("near", 390)
        # Of many stations, the nearest NEAR only: read by place, then those alone whole.
        from datetime import datetime

        from sqlalchemy import insert

        from cocharge.api.service import NEAR
        from cocharge.store.schema import stations

        async with node.engine.begin() as conn:
            await conn.execute(insert(stations), [
                {"id": f"BJ{n:03d}", "admission": "accepted", "connectors": 1,
                 "created_at": datetime(2026, 12, 1), "lat": 39.9 + n / 1000, "lon": 116.4}
                for n in range(NEAR)])
        await near("en")
        order = await browser.run(lambda: [e.get_attribute("data-station") for e in
                                           browser.driver.find_elements("css selector",
                                                                        "#near li")])
        assert order == ["P2", "P1", "N2"] + [f"BJ{n:03d}" for n in range(NEAR - 3)]
        # A position that is not one is said so.
        await browser.open("/console/near?lang=en&lat=north&lon=121.4")
        assert "lat and lon: a position in degrees" in await browser.text(".error")


async def test_the_operator_adds_blocks_and_unblocks_members(sqlite_url, browser_factory):
    """Issue 33, item 5: the operator adds a member, blocks and unblocks one from the
    console (the API's checks: a tag already taken is refused, nothing added), and the
    registry agrees; a host has no members page."""
    from cocharge.stations import registry

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.open("/console/members?lang=en")
        assert await browser.count("#members tbody tr") == 2
        await browser.fill("#add-member input[name=name]", "Cai Wen")
        await browser.fill("#add-member input[name=tag]", "T1")
        await browser.click("#add")
        assert "already" in await browser.wait_for("#members-result.bad", "Not added")
        assert await browser.count("#members tbody tr") == 2  # nothing added
        await browser.fill("#add-member input[name=name]", "Cai Wen")
        await browser.fill("#add-member input[name=tag]", "CAI")
        await browser.click("#add")
        await browser.wait_for("#members-result", "CAI added")
        assert await browser.count("#members tbody tr") == 3
        await browser.click("tr[data-tag=CAI] button.block")
        await browser.wait_for("#members-result", "CAI blocked")
        assert await browser.text("tr[data-tag=CAI] .status") == "blocked"
        listed = {m["tag"]: m["status"] for m in await registry.list_members(node.engine)}
        assert listed["CAI"] == "blocked"
        await browser.click("tr[data-tag=CAI] button.unblock")
        await browser.wait_for("#members-result", "accepted again")
        listed = {m["tag"]: m["status"] for m in await registry.list_members(node.engine)}
        assert listed["CAI"] == "accepted"
        await browser.screenshot("members")
        await browser.logout()
        await browser.login(keys["host"])
        await browser.open("/console/members")
        assert "operator" in await browser.text("main") and await browser.count("#members") == 0


async def test_the_operator_edits_a_member_and_the_change_is_recorded(sqlite_url,
                                                                       browser_factory):
    """Issue 33, item 5: the operator edits a member's details from the console (the CLI's
    checks, one place: a bad phone number is refused on the page and nothing of that form is
    written), an expiry typed at 19:00 local time is kept and shown as 19:00, and the
    member's page names who changed what; a host cannot open it."""
    from cocharge.stations import sharing

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.open("/console/members?lang=en")
        await browser.click("tr[data-tag=T1] a.edit")
        assert await browser.path() == "/console/members/T1"
        await browser.fill("#member-edit input[name=name]", "Wang Fang")
        await browser.fill("#member-edit input[name=phone]", "not a phone")
        await browser.click("#save-member")
        assert "phone" in await browser.wait_for("#member-result.bad", "Not saved")
        assert (await sharing.member_details(node.engine, "T1"))["name"] != "Wang Fang"

        await browser.fill("#member-edit input[name=name]", "Wang Fang")
        await browser.fill("#member-edit input[name=phone]", "138 0013 8000")
        await browser.run(lambda: browser.driver.execute_script(
            "document.querySelector('#member-edit input[name=expires]').value ="
            " '2027-06-30T19:00'"))
        await browser.fill("#member-edit input[name=groups]", "block-7, ev-club")
        await browser.fill("#member-edit input[name=quota_kwh]", "12.5")
        await browser.select("#member-edit select[name=language]", "en")
        await browser.click("#member-edit input[name=pay_coins]")
        await browser.click("#save-member")
        await browser.wait_for("#member-result", "T1 saved")
        stored = await sharing.member_details(node.engine, "T1")
        assert (stored["name"], stored["phone"], stored["groups"], stored["quota_kwh"],
                stored["language"], stored["pay_with"]) == (
            "Wang Fang", "13800138000", "block-7,ev-club", "12.5", "en", "coins")
        assert stored["expires_at"] == "2027-06-30T11:00:00Z"  # 19:00 in Shanghai
        assert await browser.run(lambda: browser.driver.find_element(
            "css selector", "#member-edit input[name=expires]").get_attribute(
                "value")) == "2027-06-30T19:00"
        entry = await browser.text("#audit tbody tr")
        assert "ops (console)" in entry and "member-changed" in entry and "Wang Fang" in entry
        assert "expires_at=2027-06-30 19:00 +08:00" in entry
        # Saving the form unchanged changes nothing and records nothing.
        await browser.click("#save-member")
        await browser.wait_for("#member-result", "Nothing changed")
        assert await browser.count("#audit tbody tr") == 1
        await browser.screenshot("member-edit")
        await browser.open("/console/members/T1?lang=zh")
        assert "会员资料已改" in await browser.text("#audit") and "充电桩上显示的语言" in \
            await browser.text("#member-edit")
        await browser.screenshot("member-edit-zh")
        await browser.logout()
        await browser.login(keys["host"])
        await browser.open("/console/members/T1")
        assert await browser.count("#member-edit") == 0 and "operator" in await browser.text(
            "main")


async def test_a_host_reads_its_monthly_statement_in_chinese(sqlite_url, browser_factory):
    """Issue 33, items 1 and 4: a host opens its monthly statement from its dashboard: the
    page `cocharge statement --html` writes, in the reader's language, with the ledger's
    numbers (the API's JSON of the same month agrees); another's account is not its to read."""
    async with running_node(sqlite_url, settings(api_port=0)) as node:
        from cocharge.settlement import funds

        keys = await fleet(node)
        assert node.api is not None
        await funds.top_up(node.engine, "T1", 10_000, "pay-t1")  # the driver pays: income
        async with simulated(node, "H1", "1.6", meter_interval_s=0.05) as box:
            session = await box.charge(1, "T1", energy_wh=1500)
            await asyncio.wait_for(session.done.wait(), 30)
        await node.gateway.settler.drain()
        host = Client(base(node), keys["host"])
        month = (await host.get("/api/v1/dashboard"))[1]["revenue_by_day"][-1]["day"][:7]
        status, st = await host.get(f"/api/v1/accounts/host:bob/months/{month}")
        assert status == 200 and st["totals"]["sessions"] == 1 and st["totals"]["net_fen"] > 0
        assert (await host.get(f"/api/v1/accounts/host:alice/months/{month}"))[0] == 404
        assert (await Client(base(node), keys["member"]).get(
            f"/api/v1/accounts/host:bob/months/{month}"))[0] == 403
        browser = browser_factory(node.api.url)
        await browser.login(keys["host"])
        await browser.open("/console/dashboard?lang=zh")
        await browser.click("#statement-link")
        assert await browser.path() == "/console/statement"
        await browser.wait_for("h1", "host:bob 的对账单")
        page = await browser.text("body")
        assert f"1 次充电的净收入（{st['totals']['kwh']:.3f} 千瓦时）" in page and "税款估算" in page
        assert "财产租赁所得，按月计" in page and "individual income tax" not in page
        net = f"{st['totals']['net_fen'] // 100}.{st['totals']['net_fen'] % 100:02d}"
        assert net in await browser.text("#statement-sessions tfoot")
        assert await browser.count("svg.chart") == 1  # the chart, allowed by the page's CSP
        await browser.screenshot("statement-zh")
        await browser.open("/console/statement?lang=en")
        assert "Statement for host:bob" in await browser.text("h1")
        await browser.screenshot("statement")
        await browser.open("/console/statement?account=host:alice&lang=en")
        assert "account 'host:alice'" in await browser.text("main")


async def test_the_operator_registers_a_station_from_the_fleet_page(sqlite_url,
                                                                    browser_factory):
    """Issue 33, item 5: the operator registers a station with its place from the fleet
    page (the CLI's checks: a taken id, a bad power or half a place refused, nothing
    written), and it is in the registry and the audit trail."""
    from cocharge.stations import registry
    from cocharge.store import audit

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.open("/console/?lang=en")
        for fields, says in ((("P1", "1", ""), "already"), (("N9", "abc", ""), "max_power_kw"),
                             (("N9", "11", "31.2"), "together"), (("N9", "11", ""), "1-64")):
            if says == "1-64":
                await browser.fill("#station-add input[name=connectors]", "0")
            await browser.fill("#station-add input[name=id]", fields[0])
            await browser.fill("#station-add input[name=max_power_kw]", fields[1])
            await browser.fill("#station-add input[name=lat]", fields[2])
            await browser.click("#register")
            await browser.wait_for("#station-add-result.bad", says)
        assert "N9" not in {s["id"] for s in await registry.list_stations(node.engine)}
        await browser.fill("#station-add input[name=connectors]", "1")
        await browser.fill("#station-add input[name=id]", "N9")
        await browser.fill("#station-add input[name=owner]", "carol")
        await browser.fill("#station-add input[name=max_power_kw]", "7")
        await browser.fill("#station-add input[name=lat]", "31.2304")
        await browser.fill("#station-add input[name=lon]", "121.4737")
        await browser.fill("#station-add input[name=address]", "人民广场 2 号")
        await browser.click("#register")
        await browser.wait_for("#station-add-result", "N9 registered")
        assert "N9" in await browser.text("#fleet")
        added = await registry.get_station(node.engine, "N9")
        assert (added["owner"], added["max_power_kw"], added["lat"], added["address"]) == (
            "carol", 7.0, 31.2304, "人民广场 2 号")
        # Its details edited on its page: a bad value refused on the page, nothing written;
        # then only what the form changed is sent, and kept with who did it.
        await browser.open("/console/stations/N9?lang=en")
        await browser.fill("#details input[name=max_power_kw]", "5000")
        await browser.fill("#details input[name=owner]", "dave")
        await browser.click("#save-details")
        assert "0.1 to 1000" in await browser.wait_for("#details-result.bad", "Not saved")
        assert (await registry.get_station(node.engine, "N9"))["owner"] == "carol"
        await browser.fill("#details input[name=max_power_kw]", "11")
        await browser.fill("#details input[name=owner]", "dave")
        await browser.fill("#details input[name=address]", "人民广场 3 号")
        await browser.click("#save-details")
        await browser.wait_for("#details-result", "N9 saved")
        edited = await registry.get_station(node.engine, "N9")
        assert (edited["owner"], edited["max_power_kw"], edited["lat"], edited["address"]) == (
            "dave", 11.0, 31.2304, "人民广场 3 号")
        [entry] = [e for e in await audit.entries(node.engine, "N9")
                   if e["action"] == "station-changed"]
        assert entry["details"] == {"owner": "dave", "max_power_kw": 11.0,
                                    "address": "人民广场 3 号"}
        assert entry["actor"] == "operator key ops (console)"
        assert "station-changed" in await browser.text("#audit")
        entries = await audit.entries(node.engine, "N9", None, 10)
        assert [e["action"] for e in entries] == ["station-changed", "station-added"]
        assert "ops" in entries[0]["actor"]


async def test_the_fleet_comes_in_pages_that_keep_themselves_current(sqlite_url,
                                                                     browser_factory):
    """A fleet of more stations than a page holds: 100 a page, Previous and Next, each page
    polled on its own (a charger coming online on page 2 shows there without a reload), and
    the heading's counts are the whole fleet's, not the page's."""
    from datetime import datetime

    from sqlalchemy import insert

    from cocharge.store.schema import stations
    from cocharge.web.console import PAGE

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)  # H1 P1 P2
        async with node.engine.begin() as conn:
            await conn.execute(insert(stations), [
                {"id": f"F{n:03d}", "admission": "accepted", "connectors": 1,
                 "created_at": datetime(2026, 12, 1)} for n in range(PAGE)])
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.open("/console/?lang=en")
        rows = await browser.all_text("#fleet tbody tr")
        assert len(rows) == PAGE and rows[0].startswith("F000") and rows[-1].startswith("F099")
        assert await browser.text("#page-range") == f"Stations 1-{PAGE} of {PAGE + 3}"
        assert await browser.count("#previous") == 0
        await browser.click("#next")
        await browser.wait_for("#page-range", f"Stations {PAGE + 1}-{PAGE + 3} of")
        assert [r.split()[0] for r in await browser.all_text("#fleet tbody tr")] == [
            "H1", "P1", "P2"]
        assert await browser.count("#next") == 0
        assert f"0 of {PAGE + 3} online" in await browser.text("h1")
        async with simulated(node, "P1", "1.6"):
            # this page's poll brings P1's state, keeps to the page, and counts the fleet
            await browser.wait_for("tr[data-station=P1] .online", "online")
            await browser.wait_for("h1", f"1 of {PAGE + 3} online")
            assert [r.split()[0] for r in await browser.all_text("#fleet tbody tr")] == [
                "H1", "P1", "P2"]
            await browser.click("#previous")
            await browser.wait_for("#page-range", f"Stations 1-{PAGE} of")
            assert f"1 of {PAGE + 3} online" in await browser.text("h1")
        # a filter pages what it matches; a page past the end is the last one
        await browser.open("/console/?lang=en&q=P&page=7")
        assert await browser.path() == "/console/"
        assert [r.split()[0] for r in await browser.all_text("#fleet tbody tr")] == ["P1", "P2"]
        assert await browser.count("#page-range") == 0  # one page: no pager
        # a page number that is not one is said so, in the reader's language
        await browser.open("/console/?lang=en&page=two")
        assert "page: a whole number from 1" in await browser.text(".error")
        await browser.open("/console/?lang=zh&page=-1")
        assert "页码：从 1 起的整数" in await browser.text(".error")


async def test_the_operator_finds_a_member_among_many_and_blocks_it_from_its_page(
        sqlite_url, browser_factory):
    """The members page: 100 a page, a search in tag, name and phone, and a block sent from
    page 2 of a search comes back to that page with what it did."""
    from datetime import datetime

    from sqlalchemy import insert

    from cocharge.store.schema import members
    from cocharge.web.console import PAGE

    async with running_node(sqlite_url, settings(api_port=0)) as node:
        keys = await fleet(node)  # members T1, T2: "member T1", "member T2"
        async with node.engine.begin() as conn:
            await conn.execute(insert(members), [
                {"tag": f"M{n:03d}", "name": f"Neighbour {n:03d}", "status": "accepted",
                 "phone": f"1380000{n:04d}", "created_at": datetime(2026, 12, 1)}
                for n in range(PAGE + 5)])
        assert node.api is not None
        browser = browser_factory(node.api.url)
        await browser.login(keys["operator"])
        await browser.open("/console/members?lang=en")
        assert await browser.text("#members-total") == str(PAGE + 7)
        assert await browser.count("#members tbody tr") == PAGE
        assert await browser.text("#page-range") == f"Members 1-{PAGE} of {PAGE + 7}"
        await browser.click("#next")
        await browser.wait_for("#page-range", f"Members {PAGE + 1}-{PAGE + 7} of")
        assert [r.split()[0] for r in await browser.all_text("#members tbody tr")] == [
            "M100", "M101", "M102", "M103", "M104", "T1", "T2"]
        # a search, by a phone number's part
        await browser.fill("input[name=q]", "0000010")
        await browser.click("#search")
        await browser.wait_for("#members-total", "6")
        assert [r.split()[0] for r in await browser.all_text("#members tbody tr")] == [
            "M010", "M100", "M101", "M102", "M103", "M104"]
        await browser.open("/console/members?lang=en&q=neighbour&page=2")
        assert [r.split()[0] for r in await browser.all_text("#members tbody tr")] == [
            "M100", "M101", "M102", "M103", "M104"]
        await browser.click("tr[data-tag=M102] button.block")
        await browser.wait_for("#members-result", "M102 blocked")
        assert "q=neighbour" in await browser.run(lambda: browser.driver.current_url)
        assert await browser.text("#page-range") == f"Members {PAGE + 1}-{PAGE + 5} of {PAGE + 5}"
        assert await browser.text("tr[data-tag=M102] .status") == "blocked"
        await browser.open("/console/members?lang=en&q=nobody")
        assert "No member matches." in await browser.text("#members")
