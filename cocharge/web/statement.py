"""A host's or property's monthly statement as one page that opens from a file or a mail
(styles inline, the chart inline SVG), in Chinese or English: written by `cocharge
statement --html` and served to the host by the console (/console/statement). The numbers
are settlement/statements.py's, read off the ledger."""

from __future__ import annotations

from typing import Any

from cocharge.charts import bars
from cocharge.settlement.money import fmt
from cocharge.web import i18n
from cocharge.web.pages import env


def to_html(st: dict[str, Any], language: str = i18n.DEFAULT) -> str:
    """The statement `st` (statements.statement) as a page in `language` (zh, en)."""
    before = i18n.language()
    i18n.use(language)
    try:
        days = list(st["per_day"])
        chart = bars([st["per_day"][d] / 100 for d in days], [d[-2:] for d in days],
                     i18n.gettext("Net income per day, %(month)s (CNY)", month=st["month"]),
                     " CNY", every=5)
        return env.get_template("statement.html").render(
            st=st, fmt=fmt, chart=chart, lang=i18n.language())
    finally:
        i18n.use(before)
