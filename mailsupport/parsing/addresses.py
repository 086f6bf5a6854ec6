"""Mailboxes read from From, To, Cc and Reply-To, and whether the sender is plain.

Damaged address headers yield what can be read; a From that names no single clear mailbox
(several headers, several addresses, another address in the display name) is described by
`sender_doubt`, so that such mail is treated as a stranger's.
"""

from __future__ import annotations

import inspect
import re
from email.utils import getaddresses, parseaddr

from mailsupport.mail import Address
from mailsupport.parsing.headers import clean_header, decode_header_value

# Addresses read from one header (To, Cc...): each becomes a participant of the ticket.
MAX_ADDRESSES = 1000  # Postfix's smtpd_recipient_limit
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")

# Python's security releases from 2024 on (CVE-2023-27043; Debian's 3.11.2 among them) read an
# address header strictly by default: one that is not well formed reads as no address at all,
# where other releases read what they can. The desk judges unclear senders itself
# (sender_doubt), and must read the same mail the same way on every Python it runs on.
_LENIENT: dict[str, bool] = (
    {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}
)


def address_pairs(values: list[str]) -> list[tuple[str, str]]:
    """(name, address) pairs of header values, as leniently as every Python reads them."""
    return getaddresses(values, **_LENIENT)


def address_pair(value: str) -> tuple[str, str]:
    """The first (name, address) of one value (typed by an agent, or a quoted header)."""
    return parseaddr(value, **_LENIENT)


def _plausible_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if at:
        return bool(local and domain)
    return bool(_LOCAL_PART.fullmatch(address))  # "root", "MAILER-DAEMON": local senders


def _join_split_names(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Doe, John <j@example.org> (an unquoted comma) parses as 'Doe' plus 'John <...>'."""
    out: list[tuple[str, str]] = []
    for name, address in pairs:
        if out and "@" in address and name and not out[-1][0] and "@" not in out[-1][1]:
            stray = out.pop()[1]
            if stray:
                name = f"{stray}, {name}"
        out.append((name, address))
    return out


def read_addresses(values: list[str], notes: list[str]) -> tuple[Address, ...]:
    """Mailboxes from raw (8-bit decoded, RFC 2047 still encoded) header values."""
    if not values:
        return ()
    try:
        pairs = address_pairs(values)
    except (RecursionError, ValueError, IndexError) as exc:  # deeply nested comments
        notes.append(f"address header unreadable ({type(exc).__name__})")
        return ()
    result: dict[str, Address] = {}
    for name, address in _join_split_names(pairs):
        address = address.strip()
        if "<" in address:  # '"Unclosed <a@example.org>' keeps the brackets in the address
            address = address[address.rfind("<") + 1 :].rstrip(">").strip()
        address = clean_header(address)
        if not address or " " in address or not _plausible_address(address):
            continue
        name = clean_header(decode_header_value(name, notes))
        if name.lower() == address.lower() or name.strip("'\"") == address:
            name = ""
        if len(result) >= MAX_ADDRESSES and address.lower() not in result:
            notes.append(f"more than {MAX_ADDRESSES} addresses in one header; the rest ignored")
            break
        result.setdefault(address.lower(), Address(name, address))
    return tuple(result.values())


# Something that reads as an address inside a display name.
_ADDRESS_IN_NAME = re.compile(r"[^\s@<>()\"',;:]+@[^\s@<>()\"',;:]+\.[^\s@<>()\"',;:]+")


def sender_doubt(values: list[str], notes: list[str]) -> str:
    """Why these From header values name no single clear mailbox; "" when they do.

    A mail client shows the display name, or the first of several addresses, so
    `From: anna@cust.example <eve@evil.example>` reads as anna while replies go to eve.
    Mail that is not plain about who sent it (a From whose text names no readable address
    included) is treated as a stranger's."""
    if len(values) > 1:
        return f"{len(values)} From headers"
    found = read_addresses(values, [])
    if not found and any(value.strip() for value in values):
        return "the From header names no address that can be read"
    if len(found) > 1:
        return f"{len(found)} addresses in From ({', '.join(a.address for a in found[:3])})"
    if len(found) == 1:
        named = [m for m in _ADDRESS_IN_NAME.findall(found[0].name) if m.lower() != found[0].key]
        if named:
            return f"the display name is an address ({named[0]}) other than the sender's"
    return ""
