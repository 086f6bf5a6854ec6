"""Should this message get an automatic acknowledgement? Small named checks, no I/O.

Each rule answers one yes/no question about a parsed message (and a little context the caller
looked up: our addresses, whether the message threads into a ticket, how many
acknowledgements the sender already got). A rule that matches returns a short reason; the
first match decides, and the reason is what gets recorded on the message. Whether mail is
automatic at all is read by automated.py; the rules here add what the desk knows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from mailsupport.automated import (
    auto_reply_header_evidence,
    auto_reply_subject_evidence,
    auto_submitted_evidence,
    bounce_evidence,
    bulk_evidence,
    has_null_sender,
    is_noreply_address,
    loop_evidence,
    own_address_evidence,
    report_evidence,
)
from mailsupport.mail import Address, Inbound

__all__ = [
    "ACK_RULES",
    "AckContext",
    "AckDecision",
    "AckRule",
    "ack_decision",
    "ack_recipient",
    "other_domain_reply_to",
    "person_name",
    "sender_domain",
]


@dataclass(frozen=True, slots=True)
class AckContext:
    """What the caller knows beyond the message itself."""

    our_addresses: frozenset[str]  # lowercased: the support address and its aliases
    is_reply_to_existing_ticket: bool
    # Acknowledgements the address we would answer (ack_recipient: Reply-To, else From) got
    # within the window. The name is older than Reply-To's limit; it counts the recipient.
    recent_acks_to_sender: int
    ack_limit: int = 3  # 0 turns acknowledgements off
    # Acknowledgements of mail from this From address, and from its domain, within the
    # window: forged Reply-To victims and forged From addresses of one domain add up here.
    recent_acks_from_sender: int = 0
    recent_acks_from_domain: int = 0
    domain_limit: int = 0  # 0 = none (switched off, or a shared mail provider's domain)
    # The From address takes part in a ticket an agent has answered. False is the safe
    # default: without it, a Reply-To in another domain gets no acknowledgement.
    sender_known: bool = False


@dataclass(frozen=True, slots=True)
class AckRule:
    """One question. `check` returns why not to acknowledge, or None when it does not match."""

    name: str
    description: str
    check: Callable[[Inbound, AckContext], str | None]


@dataclass(frozen=True, slots=True)
class AckDecision:
    send: bool
    rule: str | None  # the rule that said no; None when sending
    reason: str


# ------------------------------------------------------------------------------------------
# Whom an acknowledgement goes to, and what of the sender's words it may repeat
# ------------------------------------------------------------------------------------------


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def _same_organisation(one: str, other: str) -> bool:
    """Equal domains, or one a subdomain of the other (mail.corp.example, corp.example)."""
    return one == other or one.endswith("." + other) or other.endswith("." + one)


def ack_recipient(message: Inbound, our_addresses: frozenset[str]) -> Address | None:
    """Reply-To when it names one other person, else From."""
    reply_to = [a for a in message.reply_to if a.key not in our_addresses]
    if len(reply_to) == 1 and not is_noreply_address(reply_to[0].address):
        return reply_to[0]
    return message.from_


def sender_domain(message: Inbound) -> str:
    """The lowercased domain of From ("" without one)."""
    return _domain(message.from_.address) if message.from_ is not None else ""


def other_domain_reply_to(message: Inbound, our_addresses: frozenset[str]) -> Address | None:
    """The Reply-To an acknowledgement would go to, when it is in another domain than From:
    anyone can write any Reply-To, and aimed at a third party it turns us into a mail cannon
    (backscatter). None when the acknowledgement would stay in From's domain."""
    recipient = ack_recipient(message, our_addresses)
    sender = message.from_
    if recipient is None or sender is None or recipient.key == sender.key:
        return None
    if _same_organisation(_domain(recipient.address), sender_domain(message)):
        return None
    return recipient


# A display name is repeated in our mail only when it reads as a person's name: a spammer's
# "Win $1000 at evil.example" must not be greeted into a third party's inbox.
_NAME_MAX_CHARS = 60
_NAME_MAX_WORDS = 5
_NAME_PUNCTUATION = frozenset(" -'.\u2019\u02bc")  # J. R. O'Neil-Smith; ’ and ʼ as apostrophes
_DOMAIN_LIKE = re.compile(r"[^\W\d_]\.[^\W\d_]{2}")  # evil.example, bit.ly; not "J.R."
# Scripts whose letters look alike: one word mixing them is a disguise ("Раураl").
_LOOKALIKE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK"})


def person_name(name: str) -> str:
    """`name` tidied when it looks like a person's name, else "".

    A name: letters of any script (and their combining marks), words joined by spaces,
    hyphens, apostrophes and the periods of initials; at most five words and sixty
    characters. Anything else (an address, a URL or domain, digits, symbols, commas,
    control or bidi characters, a word mixing Latin and Cyrillic letters) is not repeated:
    the greeting is then the plain "Hello," / "Здравствуйте!"."""
    name = unicodedata.normalize("NFC", " ".join(name.split())).strip("\"' ")
    if not name or len(name) > _NAME_MAX_CHARS or _DOMAIN_LIKE.search(name):
        return ""
    if any(unicodedata.category(c)[0] not in "LM" and c not in _NAME_PUNCTUATION for c in name):
        return ""
    words = name.split()
    if len(words) > _NAME_MAX_WORDS:
        return ""
    for word in words:
        letters = [c for c in word if c.isalpha()]
        if not letters:  # "-", "..."
            return ""
        scripts = {unicodedata.name(c, "?").split(" ", 1)[0] for c in letters}
        if len(scripts & _LOOKALIKE_SCRIPTS) > 1:
            return ""
    return name


# ------------------------------------------------------------------------------------------
# The rules, in order
# ------------------------------------------------------------------------------------------


def _check_null_sender(message: Inbound, context: AckContext) -> str | None:
    return "empty Return-Path <>" if has_null_sender(message) else None


def _check_noreply(message: Inbound, context: AckContext) -> str | None:
    if message.from_ is not None and is_noreply_address(message.from_.address):
        return f"from a no-reply address {message.from_.key}"
    return None


def _answerable(address: Address | None) -> bool:
    if address is None:
        return False
    local, at, domain = address.address.rpartition("@")
    return bool(at and local and "." in domain)


def _check_no_address(message: Inbound, context: AckContext) -> str | None:
    if _answerable(message.from_):
        return None
    if message.from_ is None:
        return "no From address"
    return f"From address {message.from_.address!r} has no domain"


def _check_reply(message: Inbound, context: AckContext) -> str | None:
    return "reply to an existing ticket" if context.is_reply_to_existing_ticket else None


def _check_other_domain(message: Inbound, context: AckContext) -> str | None:
    if context.sender_known:
        return None
    other = other_domain_reply_to(message, context.our_addresses)
    if other is None or message.from_ is None:
        return None
    return (
        f"Reply-To {other.key} is in another domain than From {message.from_.key}, "
        "and the sender is not known to the desk"
    )


def _check_limit(message: Inbound, context: AckContext) -> str | None:
    if context.recent_acks_to_sender >= context.ack_limit:
        recipient = ack_recipient(message, context.our_addresses)
        sender = message.from_
        elsewhere = recipient is not None and sender is not None and recipient.key != sender.key
        who = "Reply-To address" if elsewhere else "sender"
        return (
            f"{who} already got {context.recent_acks_to_sender} acknowledgement(s) "
            f"within the window (limit {context.ack_limit})"
        )
    return None


def _check_sender_limit(message: Inbound, context: AckContext) -> str | None:
    if context.recent_acks_from_sender >= context.ack_limit:
        return (
            f"mail from this sender was acknowledged {context.recent_acks_from_sender} "
            f"time(s) within the window (limit {context.ack_limit})"
        )
    return None


def _check_domain_limit(message: Inbound, context: AckContext) -> str | None:
    limit = context.domain_limit
    if limit and context.recent_acks_from_domain >= limit:
        return (
            f"mail from {sender_domain(message)} was acknowledged "
            f"{context.recent_acks_from_domain} time(s) within the window (domain limit {limit})"
        )
    return None


# Most telling first: when several match, the first one is the reason shown to agents.
# Rules about the message come before rules about our own state (reply, limit).
ACK_RULES: tuple[AckRule, ...] = (
    AckRule(
        "own-address",
        "From is one of our own addresses (a loop with ourselves or another desk instance)",
        lambda m, c: own_address_evidence(m, c.our_addresses),
    ),
    AckRule(
        "loop",
        "X-Loop or X-MS-Exchange-Inbox-Rules-Loop names one of our addresses",
        lambda m, c: loop_evidence(m, c.our_addresses),
    ),
    AckRule(
        "bounce",
        "a delivery failure or delay report from the mail system",
        lambda m, c: bounce_evidence(m),
    ),
    AckRule(
        "report",
        "another machine-generated report (multipart/report, a provider's complaint mail)",
        lambda m, c: report_evidence(m),
    ),
    AckRule(
        "auto-submitted",
        'Auto-Submitted is present and not "no" (RFC 3834)',
        lambda m, c: auto_submitted_evidence(m),
    ),
    AckRule(
        "auto-reply-headers",
        "an auto-responder header (X-Autoreply, X-Auto-Response-Suppress, Precedence auto_reply)",
        lambda m, c: auto_reply_header_evidence(m),
    ),
    AckRule(
        "bulk",
        "list or bulk mail (List-Id, List-Subscribe, X-ML-Server, Precedence bulk/junk/list)",
        lambda m, c: bulk_evidence(m),
    ),
    AckRule(
        "null-sender",
        "the envelope sender is empty (Return-Path <>): mail nobody may answer",
        _check_null_sender,
    ),
    AckRule(
        "noreply-address",
        "From is a no-reply or mail-system address (noreply@, mailer-daemon@, bounces@)",
        _check_noreply,
    ),
    AckRule(
        "auto-reply-subject",
        'the subject starts like an automatic reply ("Automatic reply:", "Автоответ:")',
        lambda m, c: auto_reply_subject_evidence(m),
    ),
    AckRule(
        "no-address",
        "there is no From address we could answer",
        _check_no_address,
    ),
    AckRule(
        "reply-to-ticket",
        "a reply to an existing ticket (only new tickets are acknowledged)",
        _check_reply,
    ),
    AckRule(
        "reply-to-other-domain",
        "Reply-To is in another domain than From, and no agent has answered the sender yet",
        _check_other_domain,
    ),
    AckRule(
        "ack-limit",
        "the address we would answer already got ACK_LIMIT acknowledgements within the window",
        _check_limit,
    ),
    AckRule(
        "sender-limit",
        "mail from this From address was acknowledged ACK_LIMIT times within the window",
        _check_sender_limit,
    ),
    AckRule(
        "domain-limit",
        "mail from this From domain was acknowledged ACK_DOMAIN_LIMIT times within the window",
        _check_domain_limit,
    ),
)


def ack_decision(message: Inbound, context: AckContext) -> AckDecision:
    """The first rule that matches says no; when none does, acknowledge."""
    for rule in ACK_RULES:
        reason = rule.check(message, context)
        if reason is not None:
            return AckDecision(False, rule.name, f"no acknowledgement: {reason} ({rule.name})")
    return AckDecision(True, None, "acknowledge")
