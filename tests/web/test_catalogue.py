"""The console's words in Chinese (issue 33, item 1): every message the templates and the
console's code ask for has its translation in the catalogue, so no page shows English
inside a Chinese one."""

import glob
import os
import re

from babel.messages.extract import extract
from jinja2.ext import babel_extract

from cocharge.web import i18n

WEB = os.path.dirname(i18n.__file__)
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2)}


def asked_for() -> set[tuple[str, str]]:
    """(file, message id) of every literal message in the templates and web/*.py."""
    found: set[tuple[str, str]] = set()
    for path in glob.glob(os.path.join(WEB, "templates", "*.html")):
        with open(path, "rb") as handle:
            for _line, _function, message, _comments in babel_extract(
                    handle, KEYWORDS, [], {}):
                for text in message if isinstance(message, tuple) else (message,):
                    if isinstance(text, str):
                        found.add((os.path.basename(path), text))
    for path in glob.glob(os.path.join(WEB, "*.py")):
        with open(path, "rb") as handle:
            for _line, message, _comments, _context in extract("python", handle, KEYWORDS):
                for text in message if isinstance(message, tuple) else (message,):
                    if text:
                        found.add((os.path.basename(path), text))
    return found


def test_every_message_of_the_console_is_translated():
    asked = asked_for()
    # the extractors see both kinds of source (a broken extraction would find nothing)
    assert {f for f, _ in asked} >= {"base.html", "member.html", "console.py"}
    assert ("member.html", "Language at the charger") in asked
    assert ("station.html", "start: the member's tag") in asked  # an escaped quote, read
    missing = sorted(f"{f}: {text!r}" for f, text in asked if text not in i18n.MESSAGES["zh"])
    assert missing == []


def test_the_scripts_words_are_translated():
    """The words console.js writes itself travel in the page (i18n.js_messages)."""
    from cocharge import charts

    assert [w for w in i18n.JS_WORDS if w not in i18n.MESSAGES["zh"]] == []
    assert [d for d in charts.DAYS if d not in i18n.MESSAGES["zh"]] == []  # the charts' days


def made_messages() -> list[str]:
    """What the layers below the console really say when they refuse (made by their own
    code, so a changed English wording shows up here as an untranslated message)."""
    from datetime import date, datetime, timedelta

    from cocharge.hours import RuleError, parse_window
    from cocharge.settlement.funds import Funds
    from cocharge.settlement.money import MoneyError, parse_price
    from cocharge.stations import policy
    from cocharge.stations.policy import Booking, Member, SharingRules

    now = datetime(2026, 12, 5, 4, 0)  # a Saturday, 12:00 in Shanghai
    said: list[str] = []
    closed = SharingRules(windows=(parse_window("mon-fri 19:00-23:00"),))
    holiday = SharingRules(closed_dates=frozenset({date(2026, 12, 5)}),
                           windows=(parse_window("mon-fri 19:00-23:00"),))
    shared = SharingRules(allowed_tags=frozenset({"T1"}))
    models = SharingRules(allowed_models=frozenset({"BYD Dolphin"}))
    credit = SharingRules(min_credit=80)
    other = Booking(7, 1, "T1", now - timedelta(hours=1), now + timedelta(hours=1))
    for rules, bookings, member, reclaimed in (
            (closed, [], Member("T2"), False), (holiday, [], Member("T2"), False),
            (shared, [], Member("T2"), False), (models, [], Member("T2"), False),
            (credit, [], Member("T2", credit=40), False), (SharingRules(), [other], Member("T2"), False),
            (SharingRules(owner_priority=True), [], Member("T2"), True)):
        decision = policy.may_charge(rules, bookings, member, 1, now, reclaimed)
        assert not decision.allowed
        said.append(decision.reason)
    said.append(f"T2 may not charge at P1: {said[0]} (nothing sent to the station)")
    for funds in (Funds(0, 0, 0), Funds(500, 1500, 2000), Funds(0, 300, 0), Funds(0, 0, 2000)):
        said.append(funds.may_start(10_000)[1])
    for rules, booking in ((SharingRules(bookings=False), Booking(0, 1, "T2", now, now)),
                           (shared, Booking(0, 1, "T2", now, now + timedelta(hours=1))),
                           (SharingRules(), Booking(0, 3, "T2", now, now + timedelta(hours=1))),
                           (SharingRules(), Booking(0, 1, "T2", now, now)),
                           (SharingRules(), Booking(0, 1, "T2", now - timedelta(hours=2),
                                                    now - timedelta(hours=1))),
                           (closed, Booking(0, 1, "T2", now + timedelta(hours=1),
                                            now + timedelta(hours=2))),
                           (holiday, Booking(0, 1, "T2", now + timedelta(hours=1),
                                             now + timedelta(hours=2))),
                           (SharingRules(), Booking(0, 1, "T2", now + timedelta(minutes=30),
                                                    now + timedelta(hours=2)))):
        try:
            policy.check_booking(rules, [other], booking, now, 2, Member("T2"))
        except RuleError as exc:
            said.append(str(exc))
        else:
            raise AssertionError(f"booked: {booking}")
    for window in ("19:00-23:00", "mon-fri 7-9", "xyz 19:00-23:00", "mon 24:00-24:00",
                   "mon 19:00-19:00", "mon 19:00-25:00"):
        try:
            parse_window(window)
        except RuleError as exc:
            said.append(str(exc))
    for price in ("1,20", "-1", "1.23456"):
        try:
            parse_price(price, "per_kwh")
        except MoneyError as exc:
            said.append(str(exc))
    return said


def test_what_the_layers_below_say_is_shown_in_chinese():
    """A refusal or a check's error reaches the console as English with values in it
    (several nodes pass it on as text); i18n.explain says it in the reader's language,
    values kept. Every message the driver's and host's forms can meet is known."""
    said = made_messages()
    assert len(said) >= 25
    i18n.use("zh")
    try:
        shown = {text: i18n.explain(text) for text in said}
    finally:
        i18n.use("en")
    # Chinese, with no English phrase left (a value such as 'mon-fri 7-9' or BYD Dolphin
    # is kept as it was written)
    left = {text: chinese for text, chinese in shown.items()
            if not re.search(r"[\u4e00-\u9fff]", chinese)
            or re.search(r"[A-Za-z]+ [A-Za-z]+ [A-Za-z]+", re.sub(r"'[^']*'|mon tue wed thu fri sat sun", "", chinese))}
    assert left == {}
    nested = "T2 may not charge at P1: outside opening hours mon-fri 19:00-23:00 (nothing sent " \
             "to the station)"
    assert shown[nested] == "T2 不能在 P1 充电：不在开放时间内（mon-fri 19:00-23:00）（未向充电桩发送指令）"
    assert i18n.explain("a message nobody wrote down") == "a message nobody wrote down"
    assert i18n.explain(said[0]) == said[0]  # English readers get it as it was said


def test_the_apis_refusals_are_shown_in_chinese():
    """What the API refuses a page with (its "no ..." answers, and every fixed refusal of a
    member's key) reaches the console's error page and messages in Chinese."""
    from cocharge.api import service

    with open(service.__file__, encoding="utf-8") as handle:
        fixed = re.findall(r'forbidden\("([^"]+)"\)', handle.read())
    assert len(fixed) >= 10  # the source is read (a broken pattern would find nothing)
    said = fixed + [str(service.not_found(what)) for what in (
        "session 12", "station 'P1'", "member 'T1'", "account 'host:bob'", "booking 3",
        "group 4", "connector 2 of P1")]
    i18n.use("zh")
    try:
        shown = {text: i18n.explain(text) for text in said}
    finally:
        i18n.use("en")
    assert [text for text, chinese in shown.items()
            if not re.search(r"[\u4e00-\u9fff]", chinese)] == []
    assert shown["no station 'P1'"] == "没有充电桩 'P1'"
    assert shown["no connector 2 of P1"] == "充电桩 P1 没有 2 号充电枪"
