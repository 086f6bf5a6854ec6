"""What a bounce says: the outgoing message(s) it reports on, who failed and why. No I/O.

parse() gives us a bounce's machine-readable parts as attachments: message/delivery-status
(its field blocks, flattened back to text), message/rfc822 (the whole returned message) and
text/ or message/rfc822-headers (its headers only). Plain-text bounces (Exim, qmail) are read
as text. Finding the outbox item a bounce names, and recording it, is store/bounces.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailsupport.automated import (
    addresses_in,
    delivery_status_blocks,
    header_keyword,
    is_bounce,
    recipient_blocks,
)
from mailsupport.mail import Inbound
from mailsupport.parsing import normalize_msgid

__all__ = ["BounceInfo", "bounce_info"]


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """What a bounce says about one of our outgoing messages."""

    original_message_ids: tuple[str, ...]  # without angle brackets
    recipients: tuple[str, ...]  # lowercased
    status: str | None  # enhanced status code, e.g. "5.1.1"
    diagnostic: str | None  # the remote server's words, one line
    permanent: bool | None  # None when the bounce does not say


# An enhanced status code (RFC 3463), but not the middle of an IP address like 10.4.4.1.
_STATUS = re.compile(r"(?<![\w.])[245]\.\d{1,3}\.\d{1,3}(?!\.?\d)")
_SMTP_REPLY = re.compile(r"^\s*([45])\d\d[ -]")
# Where a plain-text bounce starts quoting the returned message (Exim, qmail, sendmail).
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}.*(?:copy of the message|original message|message headers|"
    r"undelivered message)",
    re.IGNORECASE | re.MULTILINE,
)
_QUOTED_MSGID = re.compile(r"^[ \t>]*message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# The returned message, or only its headers: RFC 6522 says text/rfc822-headers, yet some
# MTAs (qmail-based and Microsoft's among them) label them message/rfc822-headers.
_HEADER_PARTS = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
)


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _dsn_value(value: str) -> str:
    """A DSN value without its type: "rfc822; anna@example.org" -> "anna@example.org"."""
    if ";" in value:
        value = value.split(";", 1)[1]
    return " ".join(value.split())


def _dsn_address(block: dict[str, str]) -> str | None:
    # Original-Recipient is the address we sent to, before any forwarding rewrote it.
    for name in ("original-recipient", "final-recipient"):
        found = addresses_in(_dsn_value(block.get(name, "")))
        if found:
            return found[0]
    return None


def _status_code(value: str | None) -> str | None:
    match = _STATUS.search(value or "")
    return match.group(0) if match else None


def _permanent(action: str, status: str | None) -> bool | None:
    # The action is what the MTA did: "failed" means it gave up, even with a 4.x.x status
    # (a message that sat in the queue too long).
    if action == "failed":
        return True
    if action == "delayed":
        return False
    if status:
        return status.startswith("5")
    return None


def _headers_message_id(data: bytes) -> str | None:
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    value = headers.get("message-id")
    return normalize_msgid(str(value)) if value is not None else None


def _from_dsn(
    message: Inbound,
) -> tuple[list[str], list[str], str | None, str | None, bool | None] | None:
    """Message-IDs, recipients, status, diagnostic, permanence from the delivery-status
    parts; None when there are none."""
    reports = delivery_status_blocks(message)
    if not reports:
        return None
    # Gmail names the failed message in the per-message block.
    ids = [normalize_msgid(b.get("x-original-message-id")) or "" for r in reports for b in r]
    blocks = recipient_blocks(message)
    by_action: dict[str, list[dict[str, str]]] = {}
    for block in blocks:
        by_action.setdefault(header_keyword(block.get("action", "")), []).append(block)
    # Report who failed; failing that, who is delayed; failing that, whoever has no action.
    troubled = by_action.get("failed") or by_action.get("delayed") or by_action.get("") or []
    recipients = [a for a in (_dsn_address(b) for b in troubled) if a]
    if not troubled:
        return ids, recipients, None, None, None
    first = troubled[0]
    diagnostic = _dsn_value(first.get("diagnostic-code", "")) or None
    status = _status_code(first.get("status")) or _status_code(diagnostic)
    return (
        ids,
        recipients,
        status,
        diagnostic,
        _permanent(header_keyword(first.get("action", "")), status),
    )


def _from_text(text: str) -> tuple[str | None, str | None, bool | None]:
    """Status, diagnostic and permanence from a plain-text bounce (Exim, qmail)."""
    marker = _COPY_MARKER.search(text)
    report = text[: marker.start()] if marker else text
    status = diagnostic = None
    for line in report.splitlines():
        if _STATUS.search(line) or _SMTP_REPLY.match(line):
            status = _status_code(line)
            diagnostic = " ".join(line.split())
            break
    lowered = report.lower()
    if status:
        permanent: bool | None = status.startswith("5")
    elif diagnostic:
        permanent = diagnostic.lstrip().startswith("5")
    elif "permanent error" in lowered or "permanently" in lowered:
        permanent = True
    elif "temporary" in lowered or "delayed" in lowered or "still trying" in lowered:
        permanent = False
    else:
        permanent = None
    return status, diagnostic, permanent


def bounce_info(message: Inbound) -> BounceInfo | None:
    """The outgoing message(s) a bounce is about, who failed and why; None if no bounce.

    Message-IDs come from, in order: X-Original-Message-ID in the delivery report (Gmail),
    the returned message or its headers (message/rfc822, text/ or message/rfc822-headers),
    headers quoted in a plain-text bounce (Exim, qmail), and only when none of those exist,
    the bounce's own In-Reply-To and References (some MTAs set them to the failed message).
    """
    if not is_bounce(message):
        return None
    ids: list[str] = []
    recipients: list[str] = []
    status = diagnostic = None
    permanent: bool | None = None
    dsn = _from_dsn(message)
    if dsn is not None:
        ids, recipients, status, diagnostic, permanent = dsn
    for attachment in message.attachments:
        if attachment.content_type in _HEADER_PARTS:
            ids.append(_headers_message_id(attachment.data) or "")
    marker = _COPY_MARKER.search(message.text)
    quoted = message.text[marker.end() :] if marker else message.text
    ids += [normalize_msgid(found) or "" for found in _QUOTED_MSGID.findall(quoted)]
    for value in message.header_all("x-failed-recipients"):
        recipients += addresses_in(value)
    if dsn is None:
        status, diagnostic, permanent = _from_text(message.text)
        if permanent is None and recipients:
            permanent = True  # Exim only lists X-Failed-Recipients when it gave up
    original = [i for i in _dedupe(ids) if i != message.message_id]
    if not original:
        original = list(_dedupe((*message.in_reply_to, *message.references)))
    return BounceInfo(
        original_message_ids=tuple(original),
        recipients=_dedupe(recipients),
        status=status,
        diagnostic=diagnostic[:500] if diagnostic else None,
        permanent=permanent,
    )
