"""Raw message bytes -> Inbound: the whole message, from its first header to its defects.

Finds where the headers start (skipping a BOM, blank lines and a little garbage), refuses
input that is not a message at all, parses the MIME tree, and reads each header once: IDs,
addresses, subject and Date. The only module that imports mail-parser.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime
from email.message import Message

from mailparser.utils import parse_mail_date

from mailsupport.errors import PermanentError
from mailsupport.htmltext import html_to_text, sanitize_html
from mailsupport.mail import Inbound
from mailsupport.parsing.addresses import read_addresses, sender_doubt
from mailsupport.parsing.dates import parse_date
from mailsupport.parsing.headers import clean_header, decode_header_value, header_text
from mailsupport.parsing.mimetree import MAX_HEADER_SECTION, stdlib_parse
from mailsupport.parsing.msgids import normalize_msgid, parse_msgid_list
from mailsupport.parsing.streaming import STREAM_FROM, stream_parse
from mailsupport.parsing.walk import MimeWalk, normalize_text

# mail-parser logs warnings for ordinary mail ("content not handled"); they are not ours
# to show. Above CRITICAL nothing is emitted; the NullHandler keeps logging's last-resort
# stderr handler out of it even if someone lowers the level again.
_mailparser_log = logging.getLogger("mailparser")
_mailparser_log.setLevel(logging.CRITICAL + 1)
_mailparser_log.propagate = False
_mailparser_log.addHandler(logging.NullHandler())


_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
# Complete lines the stdlib parser takes for header lines (its headerRE).
_HEADER_LINES = re.compile(rb"(?:(?:From |[!-9;-~]*:|[ \t])[^\r\n]*(?:\r\n?|\n))*")
_HEADER_END = re.compile(rb"\n\r?\n|\r\r")  # CR-only: old Mac exports
_MAX_LEADING_GARBAGE = 4


def _message_start(raw: bytes, notes: list[str]) -> int:
    """Offset where the header block starts; PermanentError when there is none."""
    if not raw.strip():
        raise PermanentError("empty input: there is no message to parse")
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a BOM from some Windows tool
    while raw.startswith((b"\r\n", b"\n"), start):  # blank lines before the headers
        start = raw.index(b"\n", start) + 1
    end = _HEADER_END.search(raw, start)
    header_end = end.start() if end else len(raw)
    if raw.find(b"\x00", start, header_end) != -1:
        raise PermanentError("binary data where the headers should be: not an email message")
    for skipped in range(_MAX_LEADING_GARBAGE + 1):
        if _HEADER_LINE.match(raw, start) or (skipped == 0 and raw.startswith(b"From ", start)):
            if skipped:
                notes.append(f"skipped {skipped} line(s) before the headers")
            return start
        newline = raw.find(b"\n", start, header_end)
        if newline == -1:
            break
        start = newline + 1
    raise PermanentError("no header block: the input does not start with mail headers")


def _parse_message(raw: bytes, notes: list[str]) -> tuple[Message, datetime | None]:
    """Parse with the stdlib; the Date with mail-parser's reading of it (obsolete forms,
    alphabetic zones). mail-parser's full parse is not run: it walked and decoded every part
    only for us to walk them again, half the time of a parse."""
    message = stream_parse(raw) if len(raw) >= STREAM_FROM else stdlib_parse(raw)
    value = message.get_all("date", [None])[0]
    if value is None:
        return message, None
    try:
        return message, parse_mail_date(str(value)).value
    except Exception as exc:  # a parser bug must not lose a customer's mail
        notes.append(f"mail-parser cannot read the Date ({type(exc).__name__})")
        return message, None


def _sanitize_note(note: str) -> str:
    return clean_header(note.encode("utf-8", "backslashreplace").decode("utf-8"))


def parse(raw: bytes) -> Inbound:
    """Parse raw message bytes into an Inbound.

    Raises PermanentError only when the bytes are not a message or are nested too deeply;
    everything merely damaged parses, with notes in `defects`.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse() needs bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    notes: list[str] = []
    start = _message_start(raw, notes)
    # mimetree's message class refuses large header sections only after the stdlib has read
    # all of their lines (a million folded lines: 2 s); refuse a huge top-level one before that.
    # (A window, not the whole section: long lines, which may end it early, cost nothing.)
    window = 2 * MAX_HEADER_SECTION
    lines = _HEADER_LINES.match(raw, start, start + window)
    if lines is not None and lines.end() - start > window - 4096:
        raise PermanentError(f"header section larger than {(window - 4096) // 1024} KiB")
    body = raw[start:] if start else raw
    try:
        return _build(raw, body, notes)
    except RecursionError as exc:
        raise PermanentError("message nested too deeply to parse") from exc


def _build(raw: bytes, body: bytes, notes: list[str]) -> Inbound:
    message, mailparser_date = _parse_message(body, notes)
    first_line = body[: body.find(b"\n") + 1]
    linesep = "\r\n" if first_line.endswith(b"\r\n") else "\n"

    # Each header once: unfolded and 8-bit decoded (for addresses and IDs), then RFC 2047.
    raw_headers: dict[str, list[str]] = {}
    headers: list[tuple[str, str]] = []
    for name, value in message.raw_items():
        key = clean_header(str(name).encode("ascii", "replace").decode()).lower()
        header_notes: list[str] = []
        text = header_text(value, header_notes)
        raw_headers.setdefault(key, []).append(text)
        headers.append((key, clean_header(decode_header_value(text, header_notes))))
        notes.extend(f"{key} header: {note}" for note in header_notes)
    first_decoded = {}
    for key, value in headers:
        first_decoded.setdefault(key, value)

    message_id = normalize_msgid(raw_headers.get("message-id", [None])[0])
    generated = message_id is None
    if generated:
        message_id = hashlib.sha256(raw).hexdigest()[:40] + "@generated.mailsupport.invalid"
        notes.append("no usable Message-ID; generated one from the message bytes")

    def id_list(name: str) -> tuple[str, ...]:
        ids = parse_msgid_list(" ".join(raw_headers.get(name, [])))
        return tuple(i for i in ids if i != message_id)

    from_ = read_addresses(raw_headers.get("from", [])[:1], notes)
    if not from_:
        notes.append("no usable From address")
    doubt = sender_doubt(raw_headers.get("from", []), notes)

    walk = MimeWalk(message, linesep, notes)
    walk.run()
    plain = [t for t in walk.plain if t.strip()]
    if plain:
        text = "\n\n".join(plain)
    else:
        text = "\n\n".join(t for t in (html_to_text(h) for h in walk.html) if t)

    date_value = raw_headers.get("date", [None])[0]
    return Inbound(
        message_id=message_id,
        message_id_generated=generated,
        in_reply_to=id_list("in-reply-to"),
        references=id_list("references"),
        subject=first_decoded.get("subject", ""),
        from_=from_[0] if from_ else None,
        to=read_addresses(raw_headers.get("to", []), notes),
        cc=read_addresses(raw_headers.get("cc", []), notes),
        reply_to=read_addresses(raw_headers.get("reply-to", []), notes),
        date=parse_date(date_value, mailparser_date, notes),
        text=normalize_text(text),
        html=sanitize_html(walk.html[0]) if walk.html else None,
        attachments=tuple(walk.attachments),
        headers=tuple(headers),
        defects=tuple(dict.fromkeys(_sanitize_note(n) for n in notes)),
        sender_doubt=doubt,
    )
