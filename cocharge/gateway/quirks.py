"""Known deviations of real chargers from the OCPP schemas, declared, and how each is fixed.

Validation stays strict (`gateway/rpc.py`): a quirk runs before it, on the frame of one
station whose vendor and model (from its BootNotification) or id match the entry, and turns
a known deviation into a valid value. Whatever it does not fix is refused as before, so a
quirk never lets junk reach the database. Each quirk is logged once per station.

An entry names the actions and the fields (`meterValue[].sampledValue[].unit`: `[]` steps
into every element of a list) it fixes, and the fix:

    replace   a value listed in `values` becomes `to`
    drop      the field is removed (only when its value is listed in `values`, if given)
    truncate  a string longer than `length` is cut to it
    scale     a number (or a decimal string) is multiplied by `factor`

`where` narrows a fix to the objects whose sibling fields hold one of the listed values
("" stands for an absent field). Operators add entries in a TOML file (`cocharge serve
--quirks FILE`, docs/ocpp-errors.md), and may switch built-in entries off by name.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

log = logging.getLogger(__name__)

FIXES = ("replace", "drop", "truncate", "scale")
_ABSENT = object()


class QuirkError(ValueError):
    """A quirks file that cannot be used: the message says where and how to fix it."""


@dataclass(frozen=True)
class Quirk:
    name: str
    actions: tuple[str, ...]
    fields: tuple[str, ...]
    fix: str
    version: str = "*"            # 1.6 | 2.0.1 | *
    vendor: str = "*"             # glob, case-insensitive, on the BootNotification's vendor
    model: str = "*"              # ... and model
    station: str = "*"            # glob on the station id
    values: tuple[Any, ...] = ()  # replace / drop: the values concerned
    to: Any = None                # replace: the new value
    length: int = 0               # truncate: the longest string kept
    factor: Decimal = Decimal(1)  # scale
    where: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    note: str = ""                # why: the charger and the deviation

    def matches(self, version: str, vendor: str | None, model: str | None, station: str) -> bool:
        return (self.version in ("*", version)
                and fnmatch.fnmatch((vendor or "").casefold(), self.vendor.casefold())
                and fnmatch.fnmatch((model or "").casefold(), self.model.casefold())
                and fnmatch.fnmatchcase(station, self.station))

    def apply(self, payload: dict[str, Any]) -> bool:
        """Fix `payload` in place; True when something changed."""
        changed = False
        for steps in self._paths:
            for owner, key in _leaves(payload, steps):
                if self._where_holds(owner) and self._fix(owner, key):
                    changed = True
        return changed

    def may_apply(self, text: str | None) -> bool:
        """False when the frame `text` cannot hold a value this quirk replaces or drops (a
        text value is in the frame as its JSON string; a frame with an escape in it is looked
        at in full): every 1.6 MeterValues is checked for the "Hz" unit, and nearly none has
        it."""
        if text is None or not self._needles or "\\" in text:
            return True
        return any(needle in text for needle in self._needles)

    @functools.cached_property
    def _needles(self) -> tuple[str, ...]:
        if self.fix not in ("replace", "drop") or not self.values or not all(
                isinstance(v, str) for v in self.values):
            return ()
        return tuple(json.dumps(v, ensure_ascii=False) for v in self.values)

    @functools.cached_property
    def _paths(self) -> tuple[tuple[tuple[str, bool], ...], ...]:
        """Each field as its steps: (key, into every element of a list)."""
        return tuple(tuple((step[:-2], True) if step.endswith("[]") else (step, False)
                           for step in path.split(".")) for path in self.fields)

    def _where_holds(self, owner: dict[str, Any]) -> bool:
        for sibling, accepted in self.where:
            value = owner.get(sibling, _ABSENT)
            if not any(value is _ABSENT if a == "" else value == a for a in accepted):
                return False
        return True

    def _fix(self, owner: dict[str, Any], key: str) -> bool:
        value = owner[key]
        listed = any(_same(value, v) for v in self.values)
        if self.fix == "replace" and listed:
            owner[key] = self.to
            return True
        if self.fix == "drop" and (listed or not self.values):
            del owner[key]
            return True
        if self.fix == "truncate" and isinstance(value, str) and len(value) > self.length:
            owner[key] = value[:self.length]
            return True
        if self.fix == "scale":
            return _scale(owner, key, self.factor)
        return False


def _same(value: Any, listed: Any) -> bool:
    # True == 1 in Python: a boolean only matches a boolean.
    return bool(value == listed) and isinstance(value, bool) == isinstance(listed, bool)


def _scale(owner: dict[str, Any], key: str, factor: Decimal) -> bool:
    value = owner[key]
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except InvalidOperation:
            return False  # not a number: validation refuses it
        if not number.is_finite():
            return False
        owner[key] = format(number * factor, "f")
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        scaled = Decimal(str(value)) * factor
        owner[key] = int(scaled) if scaled == scaled.to_integral_value() else float(scaled)
        return True
    return False


def _leaves(node: Any, steps: tuple[tuple[str, bool], ...]) -> list[tuple[dict[str, Any], str]]:
    """(object, key) for each value `steps` reach in `node` (a last step's list is the value)."""
    if not steps:
        return []
    level = [node]
    for key, many in steps[:-1]:
        below: list[Any] = []
        for owner in level:
            if isinstance(owner, dict) and key in owner:
                child = owner[key]
                if not many:
                    below.append(child)
                elif isinstance(child, list):
                    below.extend(child)
        level = below
    last = steps[-1][0]
    return [(owner, last) for owner in level if isinstance(owner, dict) and last in owner]


# The known deviations (docs/ocpp-errors.md lists them with their sources).
BUILT_IN: tuple[Quirk, ...] = (
    Quirk(name="evlink-long-serial", version="1.6", vendor="Schneider*", model="EVlink*",
           actions=("BootNotification",),
           fields=("chargePointSerialNumber", "chargeBoxSerialNumber"),
           fix="truncate", length=25,
           note="Schneider EVlink sends serial numbers longer than CiString25"),
    Quirk(name="greenup-error-code", version="1.6", vendor="Legrand*",
           actions=("StatusNotification",), fields=("errorCode",), fix="replace",
           values=("Error",), to="OtherError",
           note='Legrand GreenUp reports errorCode "Error", which 1.6 does not have'),
    Quirk(name="hz-unit", version="1.6", actions=("MeterValues", "StopTransaction"),
           fields=("meterValue[].sampledValue[].unit", "transactionData[].sampledValue[].unit"),
           fix="replace", values=("Hz",), to="Hertz",
           note='chargers spell the Frequency unit "Hz"; the 1.6 errata name it "Hertz"'),
    Quirk(name="alfen-placeholder-transaction", version="1.6", vendor="Alfen*",
           actions=("MeterValues",), fields=("transactionId",), fix="drop",
           values=(9223372036854775807,),
           note="Alfen sends transactionId 2^63-1 while no transaction is known yet"),
    Quirk(name="connector-zero", version="2.0.1",
           actions=("StatusNotification", "TransactionEvent"),
           fields=("connectorId", "evse.connectorId"), fix="replace", values=(0,), to=1,
           note="2.0.1 chargers with one connector per EVSE that number it 0 instead of 1"),
)


@dataclass
class QuirkBook:
    """The quirks in force (built-in ones not switched off, then the operator's)."""

    entries: tuple[Quirk, ...] = BUILT_IN
    _logged: set[tuple[str, str]] = field(default_factory=set)
    _cache: dict[tuple[str, str | None, str | None, str], tuple[Quirk, ...]] = field(
        default_factory=dict)

    def for_station(self, version: str, vendor: str | None, model: str | None,
                    station: str) -> tuple[Quirk, ...]:
        key = (version, vendor, model, station)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = self._cache[key] = tuple(
                q for q in self.entries if q.matches(version, vendor, model, station))
        return found

    def fix(self, quirks: tuple[Quirk, ...], station: str, action: str,
            payload: dict[str, Any], text: str | None = None) -> None:
        """Apply the quirks of `action` to `payload`; `text`, the frame it was read from,
        spares the walk through the payload for a value the frame does not hold."""
        for quirk in quirks:
            if (action in quirk.actions and quirk.may_apply(text) and quirk.apply(payload)
                    and (station, quirk.name) not in self._logged):
                self._logged.add((station, quirk.name))
                log.info("station %s: quirk %s applied to %s (%s)", station, quirk.name,
                         action, quirk.note or quirk.fix)


def boot_identity(version: str, payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """Vendor and model from a BootNotification payload that has not been validated yet."""
    if version == "1.6":
        vendor, model = payload.get("chargePointVendor"), payload.get("chargePointModel")
    else:
        station = payload.get("chargingStation")
        station = station if isinstance(station, dict) else {}
        vendor, model = station.get("vendorName"), station.get("model")
    return (vendor if isinstance(vendor, str) else None,
            model if isinstance(model, str) else None)


_KEYS = {"name", "action", "field", "fix", "version", "vendor", "model", "station", "values",
         "to", "length", "factor", "where", "note"}


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(i, str) and i for i in items):
        raise QuirkError(f"{what} must be a non-empty string or a list of them")
    return tuple(items)


def parse_entry(raw: dict[str, Any], where_from: str) -> Quirk:
    """One [[quirk]] table of a quirks file."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise QuirkError(f"{where_from}: every [[quirk]] needs a name")
    at = f"{where_from}, quirk {name!r}"
    unknown = set(raw) - _KEYS
    if unknown:
        raise QuirkError(f"{at}: unknown key(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(_KEYS))})")
    fix = raw.get("fix")
    if fix not in FIXES:
        raise QuirkError(f"{at}: fix must be one of {', '.join(FIXES)}, not {fix!r}")
    try:
        actions = _strings(raw.get("action"), "action")
        fields = _strings(raw.get("field"), "field")
    except QuirkError as exc:
        raise QuirkError(f"{at}: {exc}") from None
    for path in fields:
        if path.endswith("[]") or "" in path.split("."):
            raise QuirkError(f"{at}: field {path!r} must name a value "
                             "(e.g. meterValue[].sampledValue[].unit)")
    version = raw.get("version", "*")
    if version not in ("*", "1.6", "2.0.1", "2.1"):
        raise QuirkError(f"{at}: version must be 1.6, 2.0.1, 2.1 or *, not {version!r}")
    values = raw.get("values", [])
    if not isinstance(values, list):
        raise QuirkError(f"{at}: values must be a list")
    if fix == "replace" and (not values or "to" not in raw):
        raise QuirkError(f"{at}: replace needs values = [...] and to = ...")
    length = raw.get("length", 0)
    if fix == "truncate" and (not isinstance(length, int) or isinstance(length, bool)
                              or length < 1):
        raise QuirkError(f"{at}: truncate needs length = a positive integer")
    factor = Decimal(1)
    if fix == "scale":
        try:
            factor = Decimal(str(raw["factor"]))
        except (KeyError, InvalidOperation):
            raise QuirkError(f"{at}: scale needs factor = a number (e.g. 1000)") from None
        if not factor.is_finite() or factor == 0:
            raise QuirkError(f"{at}: factor must be a finite number other than 0")
    where = raw.get("where", {})
    if not isinstance(where, dict) or not all(isinstance(v, list) for v in where.values()):
        raise QuirkError(f'{at}: where must be a table of lists, e.g. where = {{ unit = ["Wh"] }}')
    globs = {}
    for key in ("vendor", "model", "station"):
        globs[key] = raw.get(key, "*")
        if not isinstance(globs[key], str) or not globs[key]:
            raise QuirkError(f"{at}: {key} must be a non-empty text (a glob such as Alfen*)")
    if all(g == "*" for g in globs.values()):
        raise QuirkError(f"{at}: say whom it concerns: vendor, model or station "
                         '(use vendor = "*" with a model or station)')
    return Quirk(name=name, actions=actions, fields=fields, fix=fix, version=version,
                 values=tuple(values), to=raw.get("to"), length=length, factor=factor,
                 where=tuple((k, tuple(v)) for k, v in where.items()),
                 note=str(raw.get("note", "")), **globs)


def load_quirks(path: str | None) -> QuirkBook:
    """Built-in quirks, less those the file disables, plus the file's entries."""
    if path is None:
        return QuirkBook()
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise QuirkError(f"cannot read quirks file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise QuirkError(f"quirks file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"quirk", "disable"}
    if unknown:
        raise QuirkError(f"quirks file {path}: unknown section(s) {', '.join(sorted(unknown))} "
                         "(use [[quirk]] tables and disable = [...])")
    disable = data.get("disable", [])
    names = {q.name for q in BUILT_IN}
    if not isinstance(disable, list) or not set(disable) <= names:
        raise QuirkError(f"quirks file {path}: disable lists built-in quirks by name "
                         f"({', '.join(sorted(names))})")
    raw_entries = data.get("quirk", [])
    if not isinstance(raw_entries, list):
        raise QuirkError(f"quirks file {path}: write entries as [[quirk]] tables")
    entries = [parse_entry(raw, path) for raw in raw_entries]
    seen = set(names) - set(disable)
    for entry in entries:
        if entry.name in seen:
            raise QuirkError(f"quirks file {path}: quirk {entry.name!r} is defined twice "
                             "(disable the built-in one to replace it)")
        seen.add(entry.name)
    return QuirkBook(tuple(q for q in BUILT_IN if q.name not in disable) + tuple(entries))
