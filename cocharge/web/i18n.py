"""The console in Chinese and English, in the platform's time zone (issue 33, item 1).

- **Language**: `?lang=zh|en` (remembered in the `lang` cookie), else the cookie, else the
  browser's Accept-Language (the first of zh / en it names), else Chinese: the people who
  share chargers here read Chinese first. Every page has the switch.
- **Messages**: one catalogue, `locale/zh/LC_MESSAGES/messages.po` (gettext, read with
  Babel when the console starts); the templates say `_("...")`, English is the message id.
  The scripts' few words travel in the page (`js_messages`).
- **Times** are shown in the platform's time zone (`time_zone`, default Asia/Shanghai) with
  its offset (`2026-12-04 19:00 +08:00`), and a time typed into a form is read in it
  (`stations.sharing.parse_when` with `zone().key`).
- **Money**: `¥1,234.50` in Chinese, `CNY 1,234.50` in English (exact: fen to yuan).
"""

from __future__ import annotations

import contextvars
import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from babel.messages.pofile import read_po

LANGUAGES = ("zh", "en")
DEFAULT = "zh"
COOKIE = "lang"
HERE = os.path.dirname(__file__)

_language: contextvars.ContextVar[str] = contextvars.ContextVar("language", default=DEFAULT)
_zone: ZoneInfo = ZoneInfo("Asia/Shanghai")


def _catalogue(language: str) -> dict[str, str]:
    path = os.path.join(HERE, "locale", language, "LC_MESSAGES", "messages.po")
    with open(path, "rb") as handle:
        catalog = read_po(handle, locale=language)
    return {str(m.id): str(m.string) for m in catalog if m.id and m.string}


MESSAGES: dict[str, dict[str, str]] = {"zh": _catalogue("zh"), "en": {}}
# The words the console's script writes itself (console.js), given to it in the page.
JS_WORDS = ("online", "offline", "no status yet", "connector", "Station", "Online",
            "Connectors", "Power", "Area", "Charging now", "Owner", "Node", "Available",
            "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved",
            "Unavailable", "Faulted", "Occupied", "This browser has no passkeys.")


def set_zone(name: str) -> None:
    """The platform's time zone for what the console shows and reads (serve checks it)."""
    global _zone
    _zone = ZoneInfo(name)


def zone() -> ZoneInfo:
    return _zone


def choose(query: str | None, cookie: str | None, accept: str | None) -> str:
    """The page's language: asked for, remembered, or the browser's first known one."""
    for wanted in (query, cookie):
        if wanted in LANGUAGES:
            return str(wanted)
    ranked = []
    for i, part in enumerate((accept or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        code = tag.strip().lower()[:2]
        if code in LANGUAGES and weight > 0:
            ranked.append((-weight, i, code))
    return min(ranked)[2] if ranked else DEFAULT


def from_request(query: str | None, cookie: str | None, accept: str | None) -> str:
    """Choose the language of this request and use it (what the pages and messages say)."""
    chosen = choose(query, cookie, accept)
    use(chosen)
    return chosen


def zone_label() -> str:
    """The zone as people read it: Asia/Shanghai (UTC+08:00)."""
    offset = datetime.now(_zone).strftime("%z")
    return f"{_zone.key} (UTC{offset[:3]}:{offset[3:]})"


def use(language: str) -> None:
    _language.set(language if language in LANGUAGES else DEFAULT)


def language() -> str:
    return _language.get()


def gettext(message: str, **values: Any) -> str:
    text = MESSAGES.get(_language.get(), {}).get(message, message)
    return str(text % values) if values else text


def ngettext(singular: str, plural: str, n: int, **values: Any) -> str:
    chosen = singular if n == 1 else plural
    text = MESSAGES.get(_language.get(), {}).get(chosen, chosen)
    return str(text % {"num": n, **values}) if values else text  # (templates format it)


_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
_patterns: dict[str, list[tuple[re.Pattern[str], str]]] = {}


def _compiled(language: str) -> list[tuple[re.Pattern[str], str]]:
    """The catalogue's messages with values, as patterns that read the values back out of
    an English text; the most specific (most fixed words) first."""
    if language not in _patterns:
        found = []
        for message in MESSAGES.get(language, {}):
            names = _PLACEHOLDER.findall(message)
            if not names or len(set(names)) != len(names):
                continue
            parts = _PLACEHOLDER.split(message)  # fixed text, name, fixed text, ...
            pattern = "".join(re.escape(part.replace("%%", "%")) if i % 2 == 0
                              else f"(?P<{part}>.+?)" for i, part in enumerate(parts))
            fixed = sum(len(part) for part in parts[::2])
            if fixed < 4:  # a value and a dot: it would read any text
                continue
            found.append((fixed, re.compile(pattern, re.DOTALL), message))
        _patterns[language] = [(p, m) for _, p, m in sorted(found, key=lambda f: -f[0])]
    return _patterns[language]


def explain(text: Any) -> str:
    """A message made below the console (a refusal, a check's error: English with values
    in it, e.g. "outside opening hours mon-fri 19:00-23:00") in the reader's language: the
    catalogue's message it was made from, with its values kept, each explained in turn (a
    reason inside a refusal). A message the catalogue does not know stays as it is."""
    message = str(text or "")
    words = MESSAGES.get(_language.get(), {})
    if not words or not message:
        return message
    if message in words:
        return words[message]
    for pattern, source in _compiled(_language.get()):
        found = pattern.fullmatch(message)
        if found is not None:
            said = _PLACEHOLDER.sub(lambda m: f"%({m.group(1)})s", words[source])
            return said % {k: explain(v) for k, v in found.groupdict().items()}
    return message


def js_messages() -> dict[str, str]:
    return {word: gettext(word) for word in JS_WORDS}


def local_time(value: Any, seconds: bool = False) -> str:
    """A time as people here read it: in the platform's zone, with its offset. Takes a naive
    UTC datetime (the database's), an aware one, or an ISO text (the API's `...Z`)."""
    if value is None or value == "":
        return ""
    when: datetime
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    elif isinstance(value, datetime):
        when = value
    else:
        return str(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(_zone)
    offset = local.strftime("%z")
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + \
        f" {offset[:3]}:{offset[3:]}"


def local_input(value: Any) -> str:
    """An ISO time in UTC (`...Z`) as the platform's wall clock, the way a form's time field
    takes it (2026-12-04T19:00): what the booking form reads back in the same zone."""
    text = local_time(value)
    return text[:16].replace(" ", "T") if text else ""


def clock(value: Any) -> str:
    """A time of day in the platform's zone with milliseconds (the frame log)."""
    if not isinstance(value, str):
        return str(value or "")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value[11:23]
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(_zone)
    return local.strftime("%H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def money(fen: Any) -> str:
    """Fen as yuan with thousands separators: ¥1,234.50 (Chinese), CNY 1,234.50 (English)."""
    if fen is None or fen == "":
        return "-"
    amount = Decimal(int(fen)) / 100
    text = f"{abs(amount):,.2f}"
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{text}" if _language.get() == "zh" else f"{sign}CNY {text}"
