"""Text for people: the `list` table and the `show` conversation.

Plain formatted text, with ANSI colour only when asked for (a terminal without NO_COLOR, see
`app.use_colour`). Not rich: importing it costs more than the whole of `list` should take.
Cells are padded and clipped before they are coloured, so escape codes never upset widths.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, TypeVar

from mailsupport.quoting import Folded, fold
from mailsupport.store import CC, SEEN

ARROWS = {"in": "<<", "out": ">>", "note": "--"}
STATUS_STYLE = {"new": "1;36", "open": "32", "pending": "33", "closed": "2"}
PRIORITY_STYLE = {"urgent": "1;31", "high": "33", "low": "2"}
INDENT = "   "
# On a terminal narrower than this beyond the fixed columns, the requester is left out.
REQUESTER_ROOM = 40


# What a terminal would act on instead of showing: an escape sequence (ESC, or the one-byte
# CSI U+009B, then its parameters and final byte, as ECMA-48 writes them) and every other C0
# or C1 control character, DEL included. The payload of an OSC or DCS string is left visible:
# inert once its ESC is gone, and hiding it would hide what the sender tried.
_SEQUENCE = r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?|\x1b[ -/]*[0-~]?"
_CONTROL = re.compile(_SEQUENCE + r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_ENDS = re.compile(r"\r\n?")
# In a one-line field, whatever breaks or spaces a line is one space (no forged table rows).
_ONE_LINE = re.compile(
    r"(?P<space>[\t\n\r\x0b\x0c\x85\u2028\u2029]+)|" + _SEQUENCE + r"|[\x00-\x1f\x7f-\x9f]"
)
# Each sequence or control becomes this: visible, one column wide, and no word runs into the
# next (a C1 byte in text is most often a Windows quote mark decoded as Latin-1).
SHOWN_FOR_CONTROL = "\ufffd"
_T = TypeVar("_T")
# The fields of `show` that keep their lines: message texts.
MULTILINE = frozenset({"text"})


def terminal_text(text: str, *, one_line: bool = False) -> str:
    """`text` safe to print on a terminal: escape sequences and control characters replaced.

    Newlines and tabs stay (a CR ending a line becomes a newline) unless `one_line`, which
    makes every line break or tab a space. Every command that prints text from mail (or
    from a mail server) prints it through this; --json and --raw output are left as they
    are, for scripts."""
    if one_line:
        return _ONE_LINE.sub(_one_line_replacement, text)
    if "\r" in text:
        text = _LINE_ENDS.sub("\n", text)
    return _CONTROL.sub(SHOWN_FOR_CONTROL, text)


def _one_line_replacement(match: re.Match[str]) -> str:
    return " " if match["space"] else SHOWN_FOR_CONTROL


def terminal_safe(value: _T, multiline: frozenset[str] = frozenset()) -> _T:
    """`value` (dicts, lists, tuples, strings) with every string passed through terminal_text:
    one line each, but for dict keys in `multiline` (message texts)."""
    if isinstance(value, str):
        return terminal_text(value, one_line=True)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {  # type: ignore[return-value]
            key: terminal_text(item)
            if key in multiline and isinstance(item, str)
            else terminal_safe(item, multiline)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [terminal_safe(item, multiline) for item in value]  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(terminal_safe(item, multiline) for item in value)  # type: ignore[return-value]
    return value


class Paint:
    """Wraps text in SGR codes when enabled; returns it unchanged otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, style: str | None) -> str:
        if not self.enabled or not style or not text:
            return text
        return f"\x1b[{style}m{text}\x1b[0m"


def local_time(value: datetime | None) -> str:
    """A stored UTC time in the agent's local zone, to the minute."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _when(value: str | None) -> str:
    return local_time(datetime.fromisoformat(value)) if value else "-"


def _sla(detail: dict[str, Any], now: datetime) -> list[tuple[str, bool]]:
    """The SLA line of `show`: each due time, met or not, and whether it is late."""
    parts = []
    for what, due_key, done in (
        ("first response", "first_response_due", detail["first_response_at"]),
        (
            "resolution",
            "resolution_due",
            detail["closed_at"] if detail["status"] == "closed" else None,
        ),
    ):
        if not detail[due_key]:
            continue
        due = datetime.fromisoformat(detail[due_key])
        if done:
            late = datetime.fromisoformat(done) > due
            parts.append(
                (f"{what} due {_when(detail[due_key])}, {'late' if late else 'met'}", late)
            )
        else:
            late = now > due
            parts.append(
                (f"{what} due {_when(detail[due_key])}" + (" OVERDUE" if late else ""), late)
            )
    return parts


# -- list ------------------------------------------------------------------------------------


_LAST = {"customer": "cust", "us": "us"}


def ticket_table(rows: list[dict[str, Any]], width: int | None, colour: bool) -> list[str]:
    """The `list` table: a header and one line per ticket, fitted to `width` (None: never
    clipped, for pipes). The assignee and requester columns are as wide as this page needs,
    within bounds; on a narrow terminal the requester gives way to the subject."""
    rows = terminal_safe(rows)  # before measuring: a replaced sequence is one column
    paint = Paint(colour)
    who_width = min(max([len(r["assignee"] or "") for r in rows] + [len("ASSIGNEE")]), 16)
    if width is not None:  # a narrow terminal keeps 10 columns for the subject
        who_width = min(who_width, max(len("ASSIGNEE"), width - 70))
    requester_width = min(max([len(r["requester"]) for r in rows] + [len("REQUESTER")]), 28)
    before = 6 + 7 + 16 + 8 + who_width + 4 + 4 + 7 * 2  # the columns left of REQUESTER, gaps
    subject_width = None
    if width is not None:
        room = width - before  # for the requester, its gap and the subject
        requester_width = 0 if room < REQUESTER_ROOM else min(requester_width, int(room * 0.4))
        subject_width = max(room - (requester_width + 2 if requester_width else 0), 10)

    def line(cells: list[str], requester: str, subject: str) -> str:
        if requester_width:
            cells = [*cells, f"{requester:<{requester_width}}"]
        return "  ".join([*cells, subject])

    lines = [
        paint(
            line(
                [f"{'#':>6}", f"{'STATUS':<7}", f"{'UPDATED':<16}", f"{'PRIORITY':<8}",
                 f"{'ASSIGNEE':<{who_width}}", f"{'MSGS':>4}", "LAST"],
                "REQUESTER",
                "SUBJECT",
            ),
            "1",
        )
    ]  # fmt: skip
    for r in rows:
        assignee = f"{clip(r['assignee'] or '-', who_width):<{who_width}}"
        cells = [
            f"{r['number']:>6}",
            paint(f"{r['status']:<7}", STATUS_STYLE.get(r["status"])),
            f"{_when(r['updated_at']):<16}",
            paint(f"{r['priority']:<8}", PRIORITY_STYLE.get(r["priority"])),
            paint(assignee, None if r["assignee"] else "2"),
            f"{r['messages']:>4}",
            # Who wrote last: the customer (waiting for us) or us.
            paint(f"{_LAST.get(r.get('last_writer') or '', '-'):<4}",
                  "1" if r.get("last_writer") == "customer" else None),
        ]  # fmt: skip
        # Tickets opened by automatic mail say so first: no work, nobody to answer.
        subject = f"[{r['automatic']}] {r['subject']}" if r.get("automatic") else r["subject"]
        subject = subject if subject_width is None else clip(subject, subject_width)
        lines.append(line(cells, clip(r["requester"], requester_width), subject))
    return lines


# -- show ------------------------------------------------------------------------------------


def _people(participants: list[dict[str, Any]]) -> list[str]:
    """Who replies are copied to, and who the ticket knows but does not mail."""
    copied = [p["address"] for p in participants if p["role"] == CC]
    seen = [p["address"] for p in participants if p["role"] == SEEN]
    lines = [f"copied on replies: {', '.join(copied)}"] if copied else []
    if seen:
        lines.append(f"not mailed (later mail brought them in): {', '.join(seen)}")
    return lines


def ticket_text(
    detail: dict[str, Any],
    asked: int,
    *,
    full: bool = False,
    history: bool = False,
    colour: bool = False,
) -> str:
    """`show`: the header, the conversation in order, and on request the history."""
    detail = terminal_safe(detail, MULTILINE)  # before painting, which adds our own escapes
    paint = Paint(colour)
    out: list[str] = []
    if detail["number"] != asked:
        out.append(f"(ticket #{asked} was merged into #{detail['number']})")
    requester = detail["requester"]
    if detail["requester_name"]:
        requester = f"{detail['requester_name']} <{requester}>"
    out.append(paint(f"#{detail['number']}  {detail['subject']}", "1"))
    status = paint(detail["status"], STATUS_STYLE.get(detail["status"]))
    priority = paint(detail["priority"], PRIORITY_STYLE.get(detail["priority"]))
    count = len(detail["messages"])
    out.append(
        f"status {status}, priority {priority}, requester {requester}, "
        f"{count} message{'' if count == 1 else 's'}"
    )
    work = [f"assignee {detail['assignee']}" if detail["assignee"] else "unassigned"]
    work.append(f"line {detail['line']}")
    if detail["type"]:
        work.append(f"type {detail['type']}")
    if detail["queue"]:
        work.append(f"queue {detail['queue']}")
    if detail.get("mailbox_address"):  # the desk has several mailboxes
        work.append(f"mailbox {detail['mailbox']} <{detail['mailbox_address']}>")
    if detail["tags"]:
        work.append("tags " + " ".join(detail["tags"]))
    if detail["follows"]:
        work.append(f"follows #{detail['follows']}")
    out.append(", ".join(work))
    if detail.get("automatic"):
        out.append(
            f"opened by automatic mail ({detail['automatic']}): "
            "no acknowledgement, no closing notice, no due times, not counted as work"
        )
    out.extend(_people(detail.get("participants", [])))
    sla = _sla(detail, datetime.now(UTC))
    if sla:
        out.append(", ".join(paint(part, "31" if late else None) for part, late in sla))
    for position, message in enumerate(detail["messages"], 1):
        out.append("")
        out.extend(_message(message, position, paint, full))
    if history:
        out.extend(["", paint("history", "1")])
        actors = max((len(e["actor"]) for e in detail["history"]), default=0)
        for event in detail["history"]:
            out.append(
                f"{INDENT}{_when(event['at'])}  {event['actor']:<{actors}}  {event['action']}"
                + (f": {event['detail']}" if event["detail"] else "")
            )
    return "\n".join(out)


def _message(message: dict[str, Any], position: int, paint: Paint, full: bool) -> list[str]:
    direction = message["direction"]
    arrow = ARROWS.get(direction, "??")
    when = _when(message["date"])
    number = paint(f"[{position}]", "2")
    lines: list[str] = []
    if direction == "note":
        who = message["author"] or message["from"] or "?"
        lines.append(f"{arrow} {number} {paint('INTERNAL NOTE', '1;33')} by {who}  {when}")
    else:
        by = f"  by {message['author']}" if message["author"] else ""
        sender = paint(message["from"], "36" if direction == "in" else "32")
        lines.append(f"{arrow} {number} {sender}  {when}{by}")
        lines.append(f"{INDENT}{message['subject']}")
        notes = [message["thread_reason"], message["ack"]]
        if message["delivery"]:
            delivery = message["delivery"]
            trouble = f": {delivery['last_error']}" if delivery["last_error"] else ""
            notes.append(f"delivery {delivery['status']}{trouble}")
        lines.extend(paint(f"{INDENT}[{note}]", "2") for note in notes if note)
    text = message["text"]
    if text.strip():
        lines.append("")
        items = text.strip("\n").splitlines() if full else fold(text)
        for item in items:
            if isinstance(item, Folded):
                hidden = f"[… {item.lines} quoted line{'' if item.lines == 1 else 's'} hidden]"
                lines.append(INDENT + paint(hidden, "2"))
            else:
                lines.append(INDENT + item if item else "")
    for part in message["attachments"]:
        lines.append(f"{INDENT}+ {part['filename']} ({part['content_type']}, {part['size']} bytes)")
    return lines
