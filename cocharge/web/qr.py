"""The QR code stuck on a connector: it opens that connector's page in the console (price,
hours, start, live kWh and cost, stop, the bill). Made by `cocharge station qr` as a file
and printed from the console's QR page (/console/stations/ID/qr), the same address both."""

from __future__ import annotations

from urllib.parse import quote

import segno
from markupsafe import Markup


def connector_url(base: str, station_id: str, connector: int) -> str:
    """The connector's page as phones reach it (`base`: the console's address)."""
    return f"{base.rstrip('/')}/console/c/{quote(station_id, safe='')}/{connector}"


def save(url: str, path: str) -> None:
    """The code as an .svg or .png file (OSError when it cannot be written)."""
    segno.make(url, error="m").save(path, scale=8, border=4)


def inline_svg(url: str) -> Markup:
    """The code as SVG to put in a page (segno writes only its own path, no text of ours)."""
    return Markup(segno.make(url, error="m").svg_inline(scale=6, border=4))
