"""Load management: sites, circuits, attached stations, smart-charging commands."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from cocharge.cli.channel import parse_duration, remote_call, remote_command
from cocharge.cli.common import (
    ID,
    FiniteRange,
    db_option,
    emit,
    fail,
    json_option,
)
from cocharge.cli.database import with_store
from cocharge.config import GatewaySettings
from cocharge.gateway.operator_client import OperatorError, send_request
from cocharge.load import sites as store
from cocharge.stations import commands as cmd
from cocharge.stations.registry import RegistryError


@click.group("site")
def site_group() -> None:
    """Sites: one supply (a garage, a home) shared by its chargers, as a tree of circuits."""


@site_group.command("add")
@click.argument("name")
@db_option
def site_add(name: str, db: str | None) -> None:
    """A new site; give it its main circuit next (`cocharge circuit add`)."""
    with_store(db, lambda e: store.add_site(e, name))
    click.echo(f"site {name} added: now `cocharge circuit add MAIN --site {name} --limit-a 63`")


@site_group.command("list")
@db_option
@json_option
def site_list(db: str | None, as_json: bool) -> None:
    async def work(engine: Any) -> list[dict[str, Any]]:
        async with engine.connect() as conn:
            found = await store.load_sites(conn)
        return [{"site": s.name, "circuits": len(s.circuits), "stations": len(s.stations),
                 "main_limit_a": next((c.limit_a for c in s.circuits if c.parent is None), None)}
                for s in found.values()]

    emit(with_store(db, work), as_json, ["site", "circuits", "stations", "main_limit_a"])


async def _live(engine: Any, name: str) -> dict[str, Any] | None:
    try:
        answer = await send_request(engine, {"command": "site", "station": "", "args": {"site": name}},
                                    timeout=10)
    except OperatorError:
        return None
    live = answer.get("live") if answer.get("ok") else None
    return live if isinstance(live, dict) else None


def _print_site(shape: dict[str, Any], live: dict[str, Any] | None) -> None:
    click.echo(f"site {shape['site']}")
    used = {r["circuit"]: r for r in (live or {}).get("circuits", [])}

    def show(node: dict[str, Any], depth: int) -> None:
        pad = "  " * depth
        row = used.get(node["circuit"])
        now = ""
        if row is not None:
            load = [round(a + o, 1) for a, o in zip(row["allocated_a"], row["other_a"], strict=True)]
            now = f"  now L1/L2/L3 {load[0]:g}/{load[1]:g}/{load[2]:g} A (other {row['other_a']})"
        click.echo(f"{pad}- circuit {node['circuit']}: {node['limit_a']:g} A per phase, "
                   f"{node['phases']}-phase, reserve {node['reserve_a']:g} A, meter {node['meter']}{now}")
        for s in node["stations"]:
            click.echo(f"{pad}    station {s['station']} ({s['wiring']}, {s['mode']}"
                       + (f", max {s['max_current_a']:g} A" if s["max_current_a"] else "")
                       + (f", profiles by {s['purpose']}" if s["purpose"] else "") + ")")
        for child in node["circuits"]:
            show(child, depth + 1)

    for node in shape["circuits"]:
        show(node, 1)
    if not shape["circuits"]:
        click.echo("  (no circuit yet: `cocharge circuit add`)")
    if live is None:
        click.echo("live allocation: none (no gateway running on this database, or it has not "
                   "allocated the site yet)")
        return
    if live.get("surplus_w") is not None:
        click.echo(f"PV surplus: {live['surplus_w']:.0f} W")
    if live.get("grid_limit_w") is not None:
        click.echo(f"grid limit: {live['grid_limit_w']:.0f} W ({live['grid_source']})")
    settling = ", a newer one on its way to the chargers" if live.get("settling") else ""
    click.echo(f"live allocation ({live['computed_s_ago']:g} s ago{settling}):")
    for c in live["chargers"]:
        state = ("offline" if not c["online"] else "paused (waiting)" if c["paused"]
                 else c["class"])
        measured = (" measured " + "/".join(f"{a:g}" for a in c["measured_a"]) + " A"
                    if c["measured_a"] else "")
        session = f" session {c['session']}" if c["session"] else ""
        click.echo(f"  {c['station']}/{c['connector']}: {c['allocated_a']:g} A ({state}{session}), "
                   f"written {c['written_a'] if c['written_a'] is not None else '-'} A, "
                   f"safe share {c['safe_a']:g} A, by {c['purpose']}{measured}")


@site_group.command("show")
@click.argument("name")
@click.option("--watch", is_flag=True, help="Print it again every 2 seconds (Ctrl-C stops).")
@db_option
@json_option
def site_show(name: str, watch: bool, db: str | None, as_json: bool) -> None:
    """The circuit tree, and the live allocation from the running gateway."""
    async def work(engine: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        async with engine.connect() as conn:
            found = await store.load_sites(conn)
        if name not in found:
            raise RegistryError(f"no site {name!r}: `cocharge site list` shows them")
        return store.describe(found[name]), await _live(engine, name)

    while True:
        shape, live = with_store(db, work)
        if as_json:
            click.echo(json.dumps({**shape, "live": live}, indent=2))
        else:
            _print_site(shape, live)
        if not watch:
            return
        try:
            time.sleep(2)
        except KeyboardInterrupt:
            return
        click.echo("")


@site_group.command("grid-limit")
@click.argument("name")
@click.option("--kw", type=click.FloatRange(0, 1_000_000), help="What the whole site may draw.")
@click.option("--for", "for_text", help="For how long (90s, 30m, 2h, 2d; default: until "
              "--clear).")
@click.option("--source", default="operator", show_default=True,
              help="Whose limit it is (e.g. the grid operator's signal id).")
@click.option("--clear", is_flag=True, help="Lift the limit.")
@db_option
def site_grid_limit(name: str, kw: float | None, for_text: str | None, source: str,
                    clear: bool, db: str | None) -> None:
    """A grid operator's limit on what a site draws (DER control): the running gateway's load
    management honours it above the main circuit's own limit, at once."""
    if clear == (kw is not None):
        fail("give --kw N (the limit) or --clear")
    for_s = parse_duration(for_text) if for_text else None
    limit_w = None if kw is None else round(kw * 1000, 1)

    async def work(engine: Any) -> dict[str, Any]:
        try:
            return await send_request(engine, {"command": "grid-limit", "station": "", "args": {
                "site": name, "limit_w": limit_w,
                "for_s": for_s, "source": source}}, timeout=10)
        except OperatorError as exc:
            raise RegistryError(f"{exc} (the limit is held by the running gateway)") from None

    answer = with_store(db, work)
    if not answer.get("ok"):
        fail(str(answer.get("message")))
    click.echo(f"site {name}: grid limit " + ("lifted" if clear else f"{kw:g} kW" + (
        f" for {for_text}" if for_text else " until --clear")))


@site_group.command("remove")
@click.argument("name")
@db_option
def site_remove(name: str, db: str | None) -> None:
    """Remove a site, its circuits and its stations' attachments (the stations stay)."""
    with_store(db, lambda e: store.remove_site(e, name))
    click.echo(f"site {name} removed")


@click.group("circuit")
def circuit_group() -> None:
    """Circuits of a site: limits per phase, the other load on them."""


def _limit(limit_a: float | None, limit_kw: float | None, phases: int) -> float:
    try:
        return store.limit_amps(limit_a, limit_kw, phases, GatewaySettings().nominal_voltage_v)
    except RegistryError as exc:
        fail(str(exc))
        raise


@circuit_group.command("add")
@click.argument("circuit_id")
@click.option("--site", required=True, help="The site it belongs to.")
@click.option("--parent", help="The circuit it hangs from (none: the site's main circuit).")
@click.option("--limit-a", type=float, help="Its limit, amperes per phase.")
@click.option("--limit-kw", type=float, help="... or in kW (over its phases at 230 V).")
@click.option("--phases", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option("--reserve-a", type=float, default=0.0, show_default=True,
              help="Other load to count on each phase whatever the meter says (and in the failsafe).")
@click.option("--meter", default="none", show_default=True,
              help="Where its other load is measured: none, mqtt (topic circuits/<id>/load/set) "
                   "or station:ID.")
@db_option
def circuit_add(circuit_id: str, site: str, parent: str | None, limit_a: float | None,
                limit_kw: float | None, phases: str, reserve_a: float, meter: str,
                db: str | None) -> None:
    amps = _limit(limit_a, limit_kw, int(phases))
    with_store(db, lambda e: store.add_circuit(e, circuit_id, site, parent, amps, int(phases),
                                               reserve_a, meter))
    click.echo(f"circuit {circuit_id} added to site {site}: {amps:g} A per phase")


@circuit_group.command("update")
@click.argument("circuit_id")
@click.option("--limit-a", type=float)
@click.option("--limit-kw", type=float)
@click.option("--phases", type=click.Choice(["1", "3"]))
@click.option("--reserve-a", type=float)
@click.option("--meter")
@click.option("--parent")
@db_option
def circuit_update(circuit_id: str, limit_a: float | None, limit_kw: float | None,
                   phases: str | None, reserve_a: float | None, meter: str | None,
                   parent: str | None, db: str | None) -> None:
    """Change a circuit; the running gateway applies it within load_reload_s (30 s)."""
    changes: dict[str, Any] = {}
    if limit_a is not None or limit_kw is not None:
        changes["limit_a"] = _limit(limit_a, limit_kw, int(phases or 3))
    for key, value in (("phases", int(phases) if phases else None), ("reserve_a", reserve_a),
                       ("meter", meter), ("parent", parent)):
        if value is not None:
            changes[key] = value
    if not changes:
        fail("nothing to change: give --limit-a, --limit-kw, --reserve-a, --meter, ...")
    with_store(db, lambda e: store.update_circuit(e, circuit_id, changes))
    click.echo(f"circuit {circuit_id} updated")


@circuit_group.command("remove")
@click.argument("circuit_id")
@db_option
def circuit_remove(circuit_id: str, db: str | None) -> None:
    with_store(db, lambda e: store.remove_circuit(e, circuit_id))
    click.echo(f"circuit {circuit_id} removed")


@click.command("attach")
@click.argument("station_id")
@click.option("--circuit", required=True, help="The circuit that feeds it.")
@click.option("--phases", "rotation", default="L1L2L3", show_default=True,
              help="Its wiring: L1L2L3 / L2L3L1 / L3L1L2 (3-phase, which circuit phase its "
                   "phase 1, 2, 3 is) or L1 / L2 / L3 (a 1-phase charger's phase).")
@click.option("--mode", type=click.Choice(list(store.MODES)), default="fast", show_default=True,
              help="fast: the site's limits alone; pv: PV surplus only; min+pv: 6 A plus surplus.")
@click.option("--max-current-a", type=float,
              help="The charger's own maximum per phase (default: from its --max-power-kw).")
@db_option
def station_attach(station_id: str, circuit: str, rotation: str, mode: str,
                   max_current_a: float | None, db: str | None) -> None:
    """Attach a station to a circuit: load management limits it from then on."""
    found = with_store(db, lambda e: store.attach(e, station_id, circuit, rotation, mode,
                                                  max_current_a))
    click.echo(f"station {station_id} attached to circuit {circuit} ({found.rotation}, {mode})")


@click.command("detach")
@click.argument("station_id")
@db_option
def station_detach(station_id: str, db: str | None) -> None:
    """No more load management for this station (its profiles stay until cleared)."""
    with_store(db, lambda e: store.detach(e, station_id))
    click.echo(f"station {station_id} detached: `cocharge remote clear-charging-profile "
               f"{station_id}` removes what load management set")


# --- smart charging operations ----------------------------------------------------------------

def _send(db: str | None, station_id: str, name: str, args: dict[str, Any], as_json: bool,
          expires: float | None) -> None:
    args = {k: v for k, v in args.items() if v is not None}
    try:
        cmd.build_command(name, args)  # the same check the gateway makes, before any I/O
    except cmd.CommandRejected as exc:
        fail(str(exc))
    remote_call(db, station_id, name, args, as_json, expires)


def _periods(text: str) -> list[list[float]]:
    """"0:32,3600:16" -> [[0, 32], [3600, 16]]."""
    found = []
    for part in text.split(","):
        start, _, limit = part.strip().partition(":")
        try:
            found.append([int(start), float(limit)])
        except ValueError:
            fail(f"--limits {text!r}: write START_S:LIMIT pairs, e.g. 0:32,3600:16")
    return found


PURPOSE_CHOICE = click.Choice(["TxProfile", "TxDefaultProfile", "ChargePointMaxProfile",
                               "ChargingStationMaxProfile"])


@remote_command("set-charging-profile", "SetChargingProfile (every version): a limit over time.\n\n"
         "Load management writes stack levels 0 (failsafe) and 1 (allocation, and a cutoff's "
         "TxProfile); an operator's profile at level 2 or above overrides them. 2.1 stations "
         "also take Dynamic profiles (moved by update-dynamic-schedule) and operation modes: "
         "--operation-mode CentralSetpoint --setpoint -3000 --unit W has a bidirectional "
         "car give 3 kW back (V2X).")
@click.option("--connector", "connector_id", type=click.IntRange(0, 64), default=0,
              show_default=True, help="0: the whole station (default and maximum profiles).")
@click.option("--purpose", type=PURPOSE_CHOICE, required=True)
@click.option("--limits", required=True, help="START_S:LIMIT pairs from 0, e.g. 0:32,3600:16.")
@click.option("--unit", type=click.Choice(["A", "W"]), default="A", show_default=True)
@click.option("--id", "profile_id", type=click.IntRange(0, 2_099_999_999), default=1,
              show_default=True, help="The same id replaces a profile (ids from 2100000000 "
                                      "are load management's).")
@click.option("--stack-level", type=click.IntRange(0, 2**31 - 1), default=2, show_default=True)
@click.option("--kind", type=click.Choice(["Absolute", "Relative", "Recurring", "Dynamic"]),
              default="Absolute", show_default=True, help="Dynamic: 2.1, one period.")
@click.option("--start", "start_schedule", help="Absolute/Recurring: when period 0 starts "
                                               "(ISO 8601; default now).")
@click.option("--duration", type=click.IntRange(0, 2**31 - 1), help="Seconds it lasts.")
@click.option("--valid-from")
@click.option("--valid-to")
@click.option("--recurrency", type=click.Choice(["Daily", "Weekly"]))
@click.option("--session", "session_id", type=ID, help="TxProfile: its session.")
@click.option("--number-phases", type=click.IntRange(1, 3))
@click.option("--operation-mode", type=click.Choice(list(cmd.OPERATION_MODES)),
              help="2.1: every period's operation mode (default ChargingOnly).")
@click.option("--setpoint", type=FiniteRange(-1e7, 1e7),
              help="2.1, CentralSetpoint: the target in --unit (negative: discharge).")
@click.option("--discharge-limit", type=FiniteRange(-1e7, 0),
              help="2.1: at most this much discharged, 0 or negative, in --unit.")
@click.option("--dyn-update-interval", type=click.IntRange(0, 2**31 - 1),
              help="2.1, Dynamic: the station asks for an update every so many seconds.")
def remote_set_charging_profile(station_id: str, connector_id: int, purpose: str, limits: str,
                                unit: str, profile_id: int, stack_level: int, kind: str,
                                start_schedule: str | None, duration: int | None,
                                valid_from: str | None, valid_to: str | None,
                                recurrency: str | None, session_id: int | None,
                                number_phases: int | None, operation_mode: str | None,
                                setpoint: float | None, discharge_limit: float | None,
                                dyn_update_interval: int | None, db: str | None, as_json: bool,
                                expires: float | None) -> None:
    _send(db, station_id, "set-charging-profile", {
        "connector_id": connector_id, "purpose": purpose, "periods": _periods(limits),
        "unit": unit, "id": profile_id, "stack_level": stack_level, "kind": kind,
        "start_schedule": start_schedule, "duration": duration, "valid_from": valid_from,
        "valid_to": valid_to, "recurrency": recurrency, "session_id": session_id,
        "number_phases": number_phases, "operation_mode": operation_mode,
        "setpoint": setpoint, "discharge_limit": discharge_limit,
        "dyn_update_interval": dyn_update_interval}, as_json, expires)


@remote_command("update-dynamic-schedule", "2.1 UpdateDynamicSchedule: move the one period of "
                "a Dynamic profile (load management moves its own this way on 2.1 stations).")
@click.option("--profile-id", required=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--limit", type=FiniteRange(0, 1e7), help="In the profile's unit.")
@click.option("--setpoint", type=FiniteRange(-1e7, 1e7), help="Negative: discharge.")
@click.option("--discharge-limit", type=FiniteRange(-1e7, 0))
def remote_update_dynamic_schedule(station_id: str, profile_id: int, limit: float | None,
                                   setpoint: float | None, discharge_limit: float | None,
                                   db: str | None, as_json: bool, expires: float | None) -> None:
    if limit is None and setpoint is None and discharge_limit is None:
        fail("give --limit, --setpoint or --discharge-limit: what the period becomes")
    _send(db, station_id, "update-dynamic-schedule", {
        "profile_id": profile_id, "limit": limit, "setpoint": setpoint,
        "discharge_limit": discharge_limit}, as_json, expires)


@remote_command("clear-charging-profile", "ClearChargingProfile: by --id, or by connector, purpose and "
         "stack level (none given: every profile the station holds).")
@click.option("--id", "profile_id", type=click.IntRange(0, 2**31 - 1))
@click.option("--connector", "connector_id", type=click.IntRange(0, 64))
@click.option("--purpose", type=PURPOSE_CHOICE)
@click.option("--stack-level", type=click.IntRange(0, 2**31 - 1))
def remote_clear_charging_profile(station_id: str, profile_id: int | None,
                                  connector_id: int | None, purpose: str | None,
                                  stack_level: int | None, db: str | None, as_json: bool,
                                  expires: float | None) -> None:
    _send(db, station_id, "clear-charging-profile", {
        "id": profile_id, "connector_id": connector_id, "purpose": purpose,
        "stack_level": stack_level}, as_json, expires)


@remote_command("get-composite-schedule", "GetCompositeSchedule: what a connector will be allowed over "
         "the next --duration seconds, all profiles combined.")
@click.option("--connector", "connector_id", type=click.IntRange(0, 64), default=1,
              show_default=True)
@click.option("--duration", type=click.IntRange(1, 2**31 - 1), default=3600, show_default=True)
@click.option("--unit", type=click.Choice(["A", "W"]))
def remote_get_composite_schedule(station_id: str, connector_id: int, duration: int,
                                  unit: str | None, db: str | None, as_json: bool,
                                  expires: float | None) -> None:
    _send(db, station_id, "get-composite-schedule", {
        "connector_id": connector_id, "duration": duration, "unit": unit}, as_json, expires)


@remote_command("get-charging-profiles", "2.0.1 GetChargingProfiles: the station reports its profiles "
         "(ReportChargingProfiles; `cocharge station events ID --kind charging_profiles`).")
@click.option("--connector", "connector_id", type=click.IntRange(0, 64))
@click.option("--purpose", type=PURPOSE_CHOICE)
@click.option("--stack-level", type=click.IntRange(0, 2**31 - 1))
@click.option("--source", "sources", multiple=True,
              type=click.Choice(["EMS", "Other", "SO", "CSO"]))
@click.option("--id", "ids", multiple=True, type=click.IntRange(0, 2**31 - 1))
def remote_get_charging_profiles(station_id: str, connector_id: int | None, purpose: str | None,
                                 stack_level: int | None, sources: tuple[str, ...],
                                 ids: tuple[int, ...], db: str | None, as_json: bool,
                                 expires: float | None) -> None:
    _send(db, station_id, "get-charging-profiles", {
        "connector_id": connector_id, "purpose": purpose, "stack_level": stack_level,
        "sources": list(sources) or None, "ids": list(ids) or None}, as_json, expires)
