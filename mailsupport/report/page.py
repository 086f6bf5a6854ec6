"""The report as one self-contained HTML page: inline CSS, charts drawn as inline SVG."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from mailsupport.report.text import (
    category_label,
    day_count,
    duration,
    range_ends,
    sla_rows,
)

__all__ = ["render_html"]

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d0d7de; --bar: #3b6fb6; --warn: #c2410c;
  --back: #ffffff; --panel: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --ink: #e6edf3; --muted: #9198a1;
  --line: #3d444d; --bar: #6ea8fe; --warn: #fb923c; --back: #0d1117; --panel: #151b23; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 980px; padding: 24px; font: 15px/1.45 system-ui, -apple-system,
  "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--back); }
h1 { font-size: 1.5em; margin: 0 0 4px; } h2 { font-size: 1.15em; margin: 28px 0 8px; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; min-width: 150px; }
.card b { display: block; font-size: 1.5em; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 8px 24px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; }
svg { display: block; width: 100%; height: auto; }
svg text { fill: var(--muted); font-size: 11px; }
svg .bar { fill: var(--bar); } svg .axis { stroke: var(--line); }
svg .line { fill: none; stroke: var(--bar); stroke-width: 2; }
svg .dot { fill: var(--bar); } svg .label { fill: var(--ink); font-size: 12px; }
.warn { color: var(--warn); font-weight: 600; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scale_top(most: int) -> int:
    """A round top for an axis at or above `most`, with a whole half for the middle line:
    1, 2, 4, 6, 8, 10, 12, 16, 20, 30, 40, 60, 80, 100, 120, ..."""
    scale = 1
    while True:
        for mantissa in (1, 1.2, 1.6, 2, 3, 4, 6, 8):
            top = round(mantissa * scale, 6)
            if top >= most and top == int(top) and (top == 1 or top % 2 == 0):
                return int(top)
        scale *= 10


def _column_chart(points: Sequence[tuple[str, int]], caption: str, line: bool = False) -> str:
    """Columns (or a line) over days, with a light grid, a y scale and date labels."""
    width, height, left, bottom, top_pad = 760, 220, 36, 34, 10
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    most = _scale_top(max((v for _, v in points), default=0))
    n = max(len(points), 1)
    step = plot_w / n
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(caption)}">',
        f"<title>{_e(caption)}</title>",
    ]
    for fraction in (0, 0.5, 1):
        y = top_pad + plot_h * (1 - fraction)
        parts.append(
            f'<line class="axis" x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(round(most * fraction, 1) if most * fraction % 1 else int(most * fraction))}"
            "</text>"
        )
    every = max(1, math.ceil(n / 10))
    coords = []
    for i, (label, value) in enumerate(points):
        x = left + i * step
        h = plot_h * value / most
        y = top_pad + plot_h - h
        tip = f"<title>{_e(label)}: {value}</title>"
        if line:
            coords.append(f"{x + step / 2:.1f},{y:.1f}")
            parts.append(
                f'<circle class="dot" cx="{x + step / 2:.1f}" cy="{y:.1f}" r="3">{tip}</circle>'
            )
        else:
            parts.append(
                f'<rect class="bar" x="{x + step * 0.12:.1f}" y="{y:.1f}" width="{step * 0.76:.1f}"'
                f' height="{h:.1f}">{tip}</rect>'
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                f"{_e(label[5:])}</text>"
            )
    if line and coords:
        parts.insert(2, f'<polyline class="line" points="{" ".join(coords)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _bars(items: Sequence[tuple[str, int]], caption: str) -> str:
    """Horizontal bars with their label and count: for categories."""
    if not items:
        return '<p class="muted">No tickets.</p>'
    row, label_w, width = 24, 150, 460
    most = max(v for _, v in items) or 1
    height = row * len(items) + 4
    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(caption)}">',
        f"<title>{_e(caption)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = i * row + 2
        w = (width - label_w - 50) * value / most
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(shown)}'
            f"<title>{_e(label)}</title></text>"
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}">'
            f"<title>{_e(label)}: {value}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int]) -> str:
    if not rows:
        return '<p class="muted">None.</p>'

    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="n"' if i in numeric else ""
        return f"<{tag}{cls}>{value}</{tag}>"

    head = "".join(cell("th", i, _e(h)) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict[str, Any]) -> str:
    """One HTML page with inline CSS and SVG: opens anywhere, with no network.

    Every value that came from mail or from people (subjects, addresses, queue names,
    topics) is escaped here; cells are passed already escaped to `_html_table`."""
    r = report["range"]
    total = report["tickets"]
    since, until = range_ends(r)
    fr, res = report["first_response"], report["resolution"]
    sla = report["sla"]
    cards = [
        ("tickets created", str(total)),
        ("first response, median", duration(fr["median_seconds"])),
        ("resolution, median", duration(res["median_seconds"])),
        ("first-response SLA breached", f"{sla['first_response']['breached']}"),
        ("resolution SLA breached", f"{sla['resolution']['breached']}"),
        ("open at the end", str(report["backlog"][-1]["open"] if report["backlog"] else 0)),
        ("automatic mail, not work", str(report["automatic"]["tickets"])),
    ]
    body = [
        f'<h1>Support report</h1><p class="muted">Tickets created from {_e(since)} to'
        f" {_e(until)} UTC ({day_count(r['days'])}). Days are UTC days. Generated"
        f" {_e(report['generated_at'][:16].replace('T', ' '))} UTC.</p>",
        '<div class="cards">'
        + "".join(
            f'<div class="card"><b>{_e(v)}</b><span class="muted">{_e(k)}</span></div>'
            for k, v in cards
        )
        + "</div>",
        "<h2>Volume per day</h2>",
        _column_chart(
            [(d["date"], d["tickets"]) for d in report["volume"]["per_day"]],
            "Tickets created per day",
        ),
        "<h2>Volume per ISO week</h2>",
        _html_table(
            ["Week", "Starts", "Days in range", "Tickets"],
            [
                (_e(w["week"]), _e(w["start"]), w["days_in_range"], w["tickets"])
                for w in report["volume"]["per_week"]
            ],
            {2, 3},
        ),
        '<h2>Backlog</h2><p class="muted">Tickets open (created and not closed) at the end'
        " of each day.</p>",
        _column_chart(
            [(d["date"], d["open"]) for d in report["backlog"]], "Open tickets", line=True
        ),
        '<h2>Categories</h2><div class="grid">',
    ]
    for key, title, empty in (
        ("queue", "Queue", "(none)"),
        ("type", "Type", "(unclassified)"),
        ("priority", "Priority", ""),
        ("line", "Line", ""),
    ):
        items = [(category_label(row[key], empty), row["tickets"]) for row in report[f"by_{key}"]]
        if key == "line":
            items = [(f"line {label}", value) for label, value in items]
        body.append(f"<div><h3>{_e(title)}</h3>{_bars(items, f'Tickets by {key}')}</div>")
    body.append("</div>")
    body += [
        '<h2>Response times</h2><p class="muted">Median and 90th percentile by the'
        " nearest-rank method, over the tickets answered (closed) so far.</p>",
        _html_table(
            ["", "Measured", "Median", "90th percentile"],
            [
                (
                    label,
                    report[k]["measured"],
                    _e(duration(report[k]["median_seconds"])),
                    _e(duration(report[k]["p90_seconds"])),
                )
                for k, label in (("first_response", "First response"), ("resolution", "Resolution"))
            ],
            {1, 2, 3},
        ),
        '<h2>SLA breaches</h2><p class="muted">Late, or still waiting past the due time;'
        " tickets without a target are not counted.</p>",
    ]
    rows = [
        (
            f"&nbsp;&nbsp;{_e(label)}" if sub else f"<b>{_e(label.capitalize())}</b>",
            target,
            f'<span class="warn">{late}</span>' if late else "0",
            waiting,
            share,
        )
        for label, sub, target, late, waiting, share in sla_rows(sla)
    ]
    body.append(
        _html_table(["", "With target", "Breached", "Still waiting", "Share"], rows, {1, 2, 3, 4})
    )
    body += [
        '<div class="grid"><div><h2>Top senders</h2>',
        _html_table(
            ["Address", "Tickets"],
            [(_e(s["address"]), s["tickets"]) for s in report["top_senders"]],
            {1},
        ),
        "</div><div><h2>Top domains</h2>",
        _html_table(
            ["Domain", "Tickets"],
            [(_e(s["domain"]), s["tickets"]) for s in report["top_domains"]],
            {1},
        ),
        "</div></div>",
        '<h2>Most frequent problems</h2><p class="muted">Recurring words and phrases of'
        " subjects and first messages; examples are the latest tickets.</p>",
        _html_table(
            ["Topic", "Tickets", "Examples"],
            [
                (
                    f"<b>{_e(t['label'])}</b>"
                    + (
                        f'<br><span class="muted">{_e(", ".join(t["terms"]))}</span>'
                        if t["terms"]
                        else ""
                    ),
                    t["tickets"],
                    "<br>".join(f"#{e['number']} {_e(e['subject'])}" for e in t["examples"]),
                )
                for t in report["topics"]
            ],
            {1},
        ),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Support report {_e(since[:10])} to {_e(until[:10])}</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
