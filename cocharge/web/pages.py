"""The templates of the console and of the pages made for hosts (the monthly statement):
one Jinja environment, in the reader's language (web/i18n.py)."""

from __future__ import annotations

import json

from jinja2 import Environment, PackageLoader, select_autoescape

from cocharge.settlement.money import fmt
from cocharge.web import i18n

env = Environment(loader=PackageLoader("cocharge.web", "templates"),
                  autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
                  extensions=["jinja2.ext.i18n"])
env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
env.filters["cny"] = lambda fen: "-" if fen is None else fmt(int(fen))
env.filters["money"] = i18n.money
env.filters["localtime"] = i18n.local_time
env.filters["clock"] = i18n.clock
env.filters["local_input"] = i18n.local_input
env.filters["explain"] = i18n.explain
env.filters["tojson_compact"] = lambda v: json.dumps(v, default=str, separators=(",", ":"))
