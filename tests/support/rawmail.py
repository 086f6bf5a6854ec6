"""A raw message as bytes: its line breaks, header block, header fields and MIME boundaries,
found without parsing (the mail may be too broken to parse)."""

from __future__ import annotations

import re

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^[^ \t\r\n][^\n]*\n(?:[ \t][^\n]*\n)*", re.M)
_MESSAGE_ID = re.compile(rb"^message-id[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M)


def newline(raw: bytes) -> bytes:
    """The line break the message uses: CRLF or LF."""
    first = raw.find(b"\n")
    return b"\r\n" if first > 0 and raw[first - 1 : first] == b"\r" else b"\n"


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block with its line breaks, the rest starting at the blank line)."""
    match = _BLANK_LINE.search(raw)
    if match is None:
        return raw, b""
    cut = match.start() + raw[match.start() : match.end()].find(b"\n") + 1
    return raw[:cut], raw[cut:]


def header_fields(head: bytes) -> list[tuple[int, int]]:
    """Spans of the header fields (with their folded lines) in a header block."""
    return [m.span() for m in _FIELD.finditer(head)]


def fields_named(raw: bytes, name: bytes) -> list[tuple[int, int]]:
    """Spans of every `name:` field anywhere in the message (nested parts too)."""
    pattern = re.compile(
        rb"^" + re.escape(name) + rb"[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*", re.I | re.M
    )
    return [m.span() for m in pattern.finditer(raw)]


def set_message_id(raw: bytes, message_id: str) -> bytes:
    """The message with exactly one top-level Message-ID, the given one."""
    head, rest = split_head(raw)
    head = _MESSAGE_ID.sub(b"", head)
    line = b"Message-ID: <" + message_id.encode() + b">" + newline(raw)
    if head.startswith(b"From "):  # keep an mbox envelope line first
        first = head.find(b"\n") + 1
        return head[:first] + line + head[first:] + rest
    return line + head + rest


def boundaries(raw: bytes) -> list[bytes]:
    """Every MIME boundary the message declares, in order, once each."""
    found = re.findall(rb'boundary\s*=\s*"?([^";\r\n]*)"?', raw, re.I)
    return list(dict.fromkeys(b for b in found if b))
