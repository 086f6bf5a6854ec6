"""Reading an agent's mail: their own words, their #commands, and a forwarded message.

Pure functions over text. agentmail.py acts on what they find: an answer to a notification
becomes a reply or a note, a forwarded customer's mail a ticket of that customer's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mailsupport.mail import Address
from mailsupport.parsing.addresses import address_pair
from mailsupport.quoting import new_text

# A line of its own: "#note", "#close", "#pending", "#assign NAME", "#ack".
_COMMAND = re.compile(r"\s*#(note|close|pending|ack|assign)\b[ \t]*(\S.*)?", re.IGNORECASE)
# The signature delimiter ("-- "), and a line only of dashes some clients write instead.
_SIGNATURE = re.compile(r"--\s*")
# Subject prefixes of forwarded mail: Fwd, Fw, WG (German), TR (French), Пересл, Fwd[2].
FORWARD_PREFIX = re.compile(r"\s*(fwd?|wg|tr|пересл|пер)\s*(\[\d+\])?\s*:", re.IGNORECASE)
# Where a mail client starts the forwarded copy below the agent's words.
_FORWARD_START = re.compile(
    r"\s*(-{2,}\s*(forwarded message|original message|пересылаемое сообщение|"
    r"исходное сообщение|weitergeleitete nachricht|message transféré)\s*-*|_{20,}|"
    r"begin forwarded message\s*:|начало переадресованного сообщения\s*:)\s*",
    re.IGNORECASE,
)
_FIELD = re.compile(r"\s*\**([^\W\d_][\w -]{0,20}?)\s*:\**\s*(.*)")
_FIELDS = {
    "from": "from", "от": "from", "von": "from", "de": "from",
    "date": "date", "sent": "date", "дата": "date", "отправлено": "date", "gesendet": "date",
    "envoyé": "date", "datum": "date",
    "subject": "subject", "тема": "subject", "betreff": "subject", "objet": "subject",
    "to": "to", "кому": "to", "an": "to", "à": "to",
    "cc": "cc", "копия": "cc",
}  # fmt: skip
_MAILTO = re.compile(r"\[mailto:([^\]\s]+)\]", re.IGNORECASE)
# Dates as clients write them in a forward's header block, besides RFC 5322's.
_DATE_FORMATS = (
    "%a, %b %d, %Y at %I:%M %p",  # Gmail: Mon, Nov 30, 2026 at 9:00 AM
    "%A, %B %d, %Y %I:%M %p",  # Outlook: Monday, November 30, 2026 9:00 AM
    "%d %B %Y at %H:%M:%S %Z",  # Apple Mail: 30 November 2026 at 09:00:00 GMT
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M",
)


@dataclass(frozen=True, slots=True)
class Instructions:
    """What an agent's answer asks for: `text` (for the customer, or the note), and the
    commands it carries."""

    text: str
    note: bool = False
    close: bool = False
    pending: bool = False
    assign: str | None = None
    ack: bool = False


def own_words(text: str) -> list[str]:
    """The lines the agent wrote this time: above the quoted mail, without their signature."""
    lines = new_text(text.replace("\r\n", "\n").split("\n"))
    for i, line in enumerate(lines):
        if _SIGNATURE.fullmatch(line):
            lines = lines[:i]
            break
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_instructions(lines: list[str]) -> Instructions:
    """Commands on lines of their own come out of the text; `#note` counts as the first
    line only (further down it is text, like any other)."""
    note = close = pending = ack = False
    assign: str | None = None
    kept: list[str] = []
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    for i, line in enumerate(lines):
        match = _COMMAND.fullmatch(line)
        name = match[1].lower() if match else ""
        if name == "note" and i == first and not match[2]:  # type: ignore[index]
            note = True
        elif name in ("close", "pending", "ack") and not match[2]:  # type: ignore[index]
            close, pending, ack = (
                close or name == "close",
                pending or name == "pending",
                (ack or name == "ack"),
            )
        elif name == "assign" and match[2] and len(match[2].split()) == 1:  # type: ignore[index]
            assign = match[2].strip()  # type: ignore[index]
        else:
            kept.append(line)
    text = "\n".join(kept).strip("\n")
    return Instructions(text, note, close, pending, assign, ack)


@dataclass(frozen=True, slots=True)
class Forwarded:
    """A message forwarded inline: who wrote it, when, about what, and its text."""

    sender: Address
    date: datetime | None
    subject: str
    text: str
    above: list[str]  # the forwarding agent's words


def is_forward_subject(subject: str) -> bool:
    return FORWARD_PREFIX.match(subject) is not None


def strip_forward_prefix(subject: str) -> str:
    while (match := FORWARD_PREFIX.match(subject)) is not None:
        subject = subject[match.end() :].strip()
    return subject


def read_inline_forward(text: str, subject: str) -> Forwarded | None:
    """The message forwarded inline in `text` (Gmail's, Thunderbird's, Apple Mail's or
    Outlook's way), or None. Outlook's bare header block counts only under a forward's
    subject (Fw:), where it cannot be a reply's quoted history."""
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if _FORWARD_START.fullmatch(line):
            found = _header_block(lines, i + 1)
        elif is_forward_subject(subject) and _FIELD.fullmatch(line) and _field(line) == "from":
            found = _header_block(lines, i)
        else:
            continue
        if found is None:
            continue
        fields, end = found
        sender = _sender(fields.get("from", ""))
        if sender is None:
            continue
        body = lines[end:]
        while body and not body[0].strip():
            body.pop(0)
        return Forwarded(
            sender=sender,
            date=_date(fields.get("date", "")),
            subject=fields.get("subject", "").strip() or strip_forward_prefix(subject),
            text="\n".join(body).rstrip(),
            above=own_words("\n".join(lines[:i])),
        )
    return None


def _field(line: str) -> str:
    match = _FIELD.fullmatch(line)
    return _FIELDS.get(match[1].strip().lower(), "") if match else ""


def _header_block(lines: list[str], start: int) -> tuple[dict[str, str], int] | None:
    """The copied headers from lines[start] (blank lines before them skipped) up to the
    blank line after them: their values by field, and where the body starts."""
    i = start
    while i < len(lines) and not lines[i].strip():
        i += 1
    fields: dict[str, str] = {}
    while i < len(lines) and lines[i].strip():
        name = _field(lines[i])
        if not name:
            if not fields:
                return None
            break
        match = _FIELD.fullmatch(lines[i])
        assert match is not None
        fields.setdefault(name, match[2].strip())
        i += 1
    return (fields, i) if "from" in fields else None


def _sender(value: str) -> Address | None:
    value = _MAILTO.sub(lambda m: f"<{m[1]}>", value)
    name, address = address_pair(value)
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain):
        return None
    return Address(name.strip().strip('"'), address)


def _date(value: str) -> datetime | None:
    value = " ".join(value.split())
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        parsed = None
    for pattern in _DATE_FORMATS if parsed is None else ():
        try:
            parsed = datetime.strptime(value.replace("\u202f", " "), pattern)
            break
        except ValueError:
            continue
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
