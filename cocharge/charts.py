"""Charts drawn on the server as inline SVG: readable without JavaScript, on a phone, in a
screenshot, and with nothing fetched from elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def bars(values: Sequence[float], labels: Sequence[str], title: str, unit: str = "",
         every: int = 1, width: int = 640, height: int = 200) -> Markup:
    """A bar chart; `every`: label one bar in so many."""
    top = max([*values, 0]) or 1
    left, bottom, gap = 44, 28, 1
    inner_w, inner_h = width - left - 8, height - bottom - 20
    step = inner_w / max(1, len(values))
    parts = [(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>'),
             f'<text x="{left}" y="12" class="chart-title">{escape(title)}</text>']
    for fraction in (0, 0.5, 1):
        y = 20 + inner_h * (1 - fraction)
        parts.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f'{_short(top * fraction)}</text>')
    for i, value in enumerate(values):
        h = inner_h * (value / top)
        x = left + i * step
        parts.append(f'<rect x="{x + gap:.1f}" y="{20 + inner_h - h:.1f}" '
                     f'width="{max(1.0, step - 2 * gap):.1f}" height="{h:.1f}" class="bar">'
                     f'<title>{escape(labels[i])}: {_short(value)}{escape(unit)}</title></rect>')
        if i % every == 0:
            parts.append(f'<text x="{x + step / 2:.1f}" y="{height - 10}" class="axis" '
                         f'text-anchor="middle">{escape(labels[i])}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def standalone(chart: Markup) -> str:
    """A chart as an SVG file of its own (it is drawn to sit inside an HTML page)."""
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            + str(chart).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def week_heatmap(values: Sequence[float], title: str, width: int = 640,
                 days: Sequence[str] = DAYS) -> Markup:
    """168 values (Monday 00:00 first), 0..1, as a 7 x 24 grid: darker is busier (the
    busiest hour is darkest; each cell's own figure is in its tooltip); `days`: the rows'
    names, Monday first."""
    peak = max([*values, 0.0]) or 1.0
    cell = (width - 40) / 24
    height = int(20 + 7 * cell + 20)
    parts = [(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>'),
             f'<text x="40" y="12" class="chart-title">{escape(title)}</text>']
    for day in range(7):
        y = 20 + day * cell
        parts.append(f'<text x="34" y="{y + cell * 0.7:.1f}" class="axis" text-anchor="end">'
                     f'{escape(days[day])}</text>')
        for hour in range(24):
            value = max(0.0, min(1.0, values[day * 24 + hour]))
            parts.append(f'<rect x="{40 + hour * cell:.1f}" y="{y:.1f}" width="{cell - 1:.1f}" '
                         f'height="{cell - 1:.1f}" class="heat" fill-opacity="{0.06 + 0.94 * value / peak:.3f}">'
                         f'<title>{escape(days[day])} {hour:02d}:00 {value * 100:.0f} %</title></rect>')
    for hour in range(0, 24, 3):
        parts.append(f'<text x="{40 + hour * cell + cell / 2:.1f}" y="{height - 4}" class="axis" '
                     f'text-anchor="middle">{hour:02d}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"


def lines(series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]], title: str,
          x_labels: Sequence[tuple[float, str]], width: int = 640,
          height: int = 220) -> Markup:
    """Lines over a shared x axis, each on its own scale (0 to its top, shown at the left for
    the first series and at the right for the second): `series` is (name, css class,
    [(x, y)]); `x_labels` (x, text) along the bottom."""
    left, right, bottom, top_pad = 44, 44, 28, 20
    inner_w, inner_h = width - left - right, height - bottom - top_pad
    xs = [x for _, _, points in series for x, _ in points]
    low, high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    span = (high - low) or 1.0
    parts = [(f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
              f'aria-label="{escape(title)}"><title>{escape(title)}</title>'),
             f'<text x="{left}" y="12" class="chart-title">{escape(title)}</text>']
    for fraction in (0, 0.5, 1):
        y = top_pad + inner_h * (1 - fraction)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
    for n, (name, css, points) in enumerate(series[:2]):
        peak = max([y for _, y in points] + [0]) or 1
        for fraction in (0, 0.5, 1):
            y = top_pad + inner_h * (1 - fraction)
            at, anchor = (left - 4, "end") if n == 0 else (width - right + 4, "start")
            parts.append(f'<text x="{at}" y="{y + 4:.1f}" class="axis {css}" '
                         f'text-anchor="{anchor}">{_short(peak * fraction)}</text>')
        drawn = " ".join(f"{left + inner_w * (x - low) / span:.1f},"
                         f"{top_pad + inner_h * (1 - y / peak):.1f}" for x, y in points)
        if drawn:
            parts.append(f'<polyline points="{drawn}" class="line {css}" fill="none">'
                         f'<title>{escape(name)}</title></polyline>')
    for x, text in x_labels:
        parts.append(f'<text x="{left + inner_w * (x - low) / span:.1f}" y="{height - 10}" '
                     f'class="axis" text-anchor="middle">{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
