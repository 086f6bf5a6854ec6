"""The report as aligned plain-text tables, for a terminal, a mail or a pipe.

The wording helpers here (durations, shares, the SLA rows) serve the HTML page too, so both
say the same thing the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any

__all__ = [
    "category_label",
    "day_count",
    "duration",
    "range_ends",
    "render_text",
    "share",
    "sla_rows",
]


def duration(seconds: int | None) -> str:
    """45s, 12m, 3h 05m, 2d 04h; "-" for nothing measured."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def category_label(value: Any, empty: str) -> str:
    """A queue, type, priority or line as shown; `empty` for none ("(unclassified)")."""
    return str(value) if value not in ("", None) else empty


def _table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1
) -> list[str]:
    """A heading and an aligned table: numbers right-aligned, the first `left` columns and
    a last column of bars or ticket numbers (header "" or EXAMPLES) left-aligned."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    flush_left = {*range(left)}
    if header[-1] in ("", "EXAMPLES"):
        flush_left.add(len(header) - 1)

    def line(row: list[str]) -> str:
        return (
            "  "
            + "  ".join(
                cell.ljust(width) if i in flush_left else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )

    out = [title]
    out += [line(row) for row in cells] if rows else ["  (none)"]
    return [*out, ""]


def share(part: int, whole: int) -> str:
    """A whole percentage, halves rounded up (12.5% -> 13%)."""
    return f"{(200 * part + whole) // (2 * whole)}%" if whole else "-"


def _bar(value: int, most: int, width: int = 30) -> str:
    return "#" * (math.ceil(width * value / most) if most and value else 0)


def sla_rows(sla: dict[str, Any]) -> list[tuple[str, bool, int, int, int, str]]:
    """(label, by priority?, with target, breached, still waiting, share) for both targets,
    each followed by its priorities that have targets."""
    rows = []
    for key in ("first_response", "resolution"):
        for s, sub in [(sla[key], False), *((p, True) for p in sla[key]["by_priority"])]:
            if sub and not s["with_target"]:
                continue
            label = s["priority"] if sub else key.replace("_", " ")
            figures = (s["with_target"], s["breached"], s["still_waiting"])
            rows.append((label, sub, *figures, share(s["breached"], s["with_target"])))
    return rows


def day_count(count: int) -> str:
    """The count with its unit: 1 day, 30 days."""
    return f"{count} day" if count == 1 else f"{count} days"


def range_ends(r: dict[str, Any]) -> tuple[str, str]:
    """The report's since and until as "YYYY-MM-DD HH:MM" (UTC, as the report has them)."""
    return r["since"][:16].replace("T", " "), r["until"][:16].replace("T", " ")


def automatic_line(report: dict[str, Any]) -> str:
    """Tickets opened by automatic mail, which no other figure counts."""
    automatic = report["automatic"]
    kinds = ", ".join(f"{k['kind']} {k['tickets']}" for k in automatic["by_kind"])
    return f"Automatic mail, not counted as work: {automatic['tickets']} ({kinds})"


def render_text(report: dict[str, Any]) -> str:
    """The report as aligned tables for a terminal (or a mail, or a pipe)."""
    r = report["range"]
    total = report["tickets"]
    since, until = range_ends(r)
    out = [f"Tickets created {since} to {until} UTC ({day_count(r['days'])}): {total}"]
    out += [automatic_line(report), ""] if report["automatic"]["tickets"] else [""]
    per_day = report["volume"]["per_day"]
    most = max((d["tickets"] for d in per_day), default=0)
    out += _table(
        "Volume per day (UTC)",
        ["DAY", "TICKETS", ""],
        [
            (
                f"{d['date']} {date.fromisoformat(d['date']):%a}",
                d["tickets"],
                _bar(d["tickets"], most),
            )
            for d in per_day
        ],
    )
    out += _table(
        "Volume per ISO week",
        ["WEEK", "STARTS", "DAYS", "TICKETS"],
        [
            (w["week"], w["start"], w["days_in_range"], w["tickets"])
            for w in report["volume"]["per_week"]
        ],
    )
    for key, title, empty in (
        ("queue", "By queue", "(none)"),
        ("type", "By type", "(unclassified)"),
        ("priority", "By priority", ""),
        ("line", "By line", ""),
    ):
        out += _table(
            title,
            [key.upper(), "TICKETS", "SHARE"],
            [
                (category_label(row[key], empty), row["tickets"], share(row["tickets"], total))
                for row in report[f"by_{key}"]
            ],
        )
    out += _table(
        "Response times",
        ["", "MEASURED", "MEDIAN", "90TH PCT"],
        [
            (
                label,
                report[key]["measured"],
                duration(report[key]["median_seconds"]),
                duration(report[key]["p90_seconds"]),
            )
            for key, label in (("first_response", "first response"), ("resolution", "resolution"))
        ],
    )
    sla = report["sla"]
    rows = [(("  " if sub else "") + label, *figures) for label, sub, *figures in sla_rows(sla)]
    out += _table("SLA breaches", ["", "WITH TARGET", "BREACHED", "STILL WAITING", "SHARE"], rows)
    backlog_points = report["backlog"]
    most = max((d["open"] for d in backlog_points), default=0)
    out += _table(
        "Backlog: open tickets at the end of each day (UTC)",
        ["DAY", "OPEN", ""],
        [(d["date"], d["open"], _bar(d["open"], most)) for d in backlog_points],
    )
    out += _table(
        "Top senders",
        ["ADDRESS", "TICKETS"],
        [(s["address"], s["tickets"]) for s in report["top_senders"]],
    )
    out += _table(
        "Top domains",
        ["DOMAIN", "TICKETS"],
        [(s["domain"], s["tickets"]) for s in report["top_domains"]],
    )
    out += _table(
        "Most frequent problems",
        ["TOPIC", "TICKETS", "EXAMPLES"],
        [
            (t["label"], t["tickets"], " ".join(f"#{e['number']}" for e in t["examples"]))
            for t in report["topics"]
        ],
    )
    return "\n".join(out).rstrip() + "\n"
