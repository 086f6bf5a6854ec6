"""Should this message get an automatic acknowledgement? Small named checks, no I/O.

Each rule answers one yes/no question about a parsed message (and a little context the caller
looked up: our addresses, whether the message threads into a ticket, how many
acknowledgements the sender already got). A rule that matches returns a short reason; the
first match decides, and the reason is what gets recorded on the message.

The checks follow RFC 3834 (never answer automatic mail, lists, or a null sender) plus the
loops other helpdesks shipped: out-of-office responders without Auto-Submitted, another
helpdesk's acknowledgements, our own mail coming back.

Also here: `bounce_info`, which reads a bounce for the outgoing Message-ID(s) it reports on,
the failed recipients and the status. parse() gives us a bounce's machine-readable parts as
attachments: message/delivery-status (its field blocks, flattened back to text),
message/rfc822 (the whole returned message) and text/rfc822-headers (its headers only).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

from mailsupport.mail import Address, Inbound
from mailsupport.parsing import normalize_msgid

__all__ = [
    "RULES",
    "AckContext",
    "AckDecision",
    "BounceInfo",
    "Rule",
    "ack_decision",
    "ack_recipient",
    "bounce_info",
    "is_auto_reply",
    "is_automated",
    "is_bounce",
    "is_bulk",
    "is_loop",
    "is_noreply_address",
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
class Rule:
    """One question. `check` returns why not to acknowledge, or None when it does not match."""

    name: str
    description: str
    check: Callable[[Inbound, AckContext], str | None]


@dataclass(frozen=True, slots=True)
class AckDecision:
    send: bool
    rule: str | None  # the rule that said no; None when sending
    reason: str


@dataclass(frozen=True, slots=True)
class BounceInfo:
    """What a bounce says about one of our outgoing messages."""

    original_message_ids: tuple[str, ...]  # without angle brackets
    recipients: tuple[str, ...]  # lowercased
    status: str | None  # enhanced status code, e.g. "5.1.1"
    diagnostic: str | None  # the remote server's words, one line
    permanent: bool | None  # None when the bounce does not say


# ------------------------------------------------------------------------------------------
# Small readers over headers
# ------------------------------------------------------------------------------------------

_REASON_MAX = 80  # reasons are shown in one line of `show`
_COMMENT = re.compile(r"\([^()]*\)")


def _label(name: str) -> str:
    """A lowercased header name as people write it: "x-ms-exchange-..." -> "X-MS-Exchange-..."."""
    return "-".join(
        piece.upper() if piece == "ms" else piece.capitalize() for piece in name.split("-")
    )


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 1] + "…"


def _keyword(value: str) -> str:
    """The first token of a structured header value: comments and parameters dropped,
    lowercased. "No (sent by a person)" -> "no"; "auto-replied; owner-email=..." ->
    "auto-replied"."""
    previous = None
    while previous != value:  # innermost comments first, so nested ones go too
        previous, value = value, _COMMENT.sub(" ", value)
    return value.split(";", 1)[0].strip().lower()


def _local_part(address: str) -> str:
    local = address.rpartition("@")[0] if "@" in address else address
    return local.strip().strip('"').lower()


_ADDRESS_IN_TEXT = re.compile(r"[^\s<>,;:\"'()\[\]]+@[^\s<>,;:\"'()\[\]]+")


def _addresses_in(value: str) -> list[str]:
    return [a.lower().rstrip(".") for a in _ADDRESS_IN_TEXT.findall(value)]


def _content_type(message: Inbound) -> tuple[str, str]:
    """The top-level content type and its report-type parameter (lowercased). parse() keeps
    neither as a field, so read them from the header."""
    value = message.header("content-type") or ""
    ctype = value.split(";", 1)[0].strip().lower()
    match = re.search(r";\s*report-type\s*=\s*\"?([^\";\s]+)", value, re.IGNORECASE)
    return ctype, match.group(1).lower() if match else ""


def _null_sender(message: Inbound) -> bool:
    # The topmost Return-Path is the one the final delivery wrote.
    value = message.header("return-path")
    return value is not None and value.replace(" ", "") in ("<>", "")


def _auto_submitted(message: Inbound) -> str | None:
    """The first Auto-Submitted value other than "no". An empty or unreadable value counts
    as automatic too: people's mail clients never write the header at all."""
    for value in message.header_all("auto-submitted"):
        if _keyword(value) != "no":
            return value
    return None


# ------------------------------------------------------------------------------------------
# Bounces and other reports
# ------------------------------------------------------------------------------------------

_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})

# Bounce subjects count only together with a second sign (null sender, a mail-system sender,
# Auto-Submitted): a person may well write "Undeliverable: invoice".
_BOUNCE_SUBJECT = re.compile(
    r"""(?:undelivered\ mail\ returned\ to\ sender      # Postfix
        |undeliver(?:able|ed)\b                         # Exchange, generic
        |delivery\ status\ notification                 # Gmail, Exchange
        |mail\ delivery\ (?:failed|failure|delayed)     # Exim
        |returned\ mail\s*:                             # sendmail
        |warning:\ could\ not\ send\ message            # sendmail delay
        |delayed\ mail\b                                # Postfix delay
        |delivery\ (?:failure|failed|delayed)
        |failure\ notice                                # qmail
        |недоставленное\ сообщение
        |не\ доставлено\s*:                             # Exchange, Russian
        |unzustellbar\s*:                               # Exchange, German
        |non\ remis\s*:                                 # Exchange, French
        |no\ se\ puede\ entregar\s*:                    # Exchange, Spanish
        |non\ recapitabile\s*:                          # Exchange, Italian
        )""",
    re.IGNORECASE | re.VERBOSE,
)


def _dsn_blocks(message: Inbound) -> list[list[dict[str, str]]]:
    """Each delivery-status part as its field blocks (per-message first, then one per
    recipient), field names lowercased, continuation lines unfolded."""
    reports = []
    for attachment in message.attachments:
        if attachment.content_type not in _DSN_TYPES:
            continue
        text = attachment.data.decode("utf-8", "replace").replace("\r\n", "\n")
        blocks: list[dict[str, str]] = []
        for chunk in re.split(r"\n[ \t]*\n", text):
            fields: dict[str, str] = {}
            name = None
            for line in chunk.split("\n"):
                if line[:1] in (" ", "\t") and name is not None:
                    fields[name] += " " + line.strip()
                elif ":" in line:
                    name, _, value = line.partition(":")
                    name = name.strip().lower()
                    fields.setdefault(name, value.strip())
            if fields:
                blocks.append(fields)
        reports.append(blocks)
    return reports


def _recipient_blocks(message: Inbound) -> list[dict[str, str]]:
    recipients = []
    for blocks in _dsn_blocks(message):
        # The first block is about the message; the rest are one per recipient. Some
        # generators forget the per-message block, so look at the fields, not the position.
        recipients += [b for b in blocks if "final-recipient" in b or "action" in b]
    return recipients


def _only_success(message: Inbound) -> bool:
    """A delivery report that only says "delivered" or "relayed" (NOTIFY=SUCCESS)."""
    recipients = _recipient_blocks(message)
    actions = [_keyword(b.get("action", "")) for b in recipients]
    return bool(actions) and all(action in _SUCCESS_ACTIONS for action in actions)


def _bounce_evidence(message: Inbound) -> str | None:
    ctype, report_type = _content_type(message)
    if ctype == "multipart/report" and report_type in ("delivery-status", "global-delivery-status"):
        if not _only_success(message):
            return f"delivery status report (multipart/report; report-type={report_type})"
        return None  # a success notice; the "report" rule still keeps it from an answer
    failed = message.header("x-failed-recipients")
    if failed is not None:  # Exim, also on its plain-text bounces
        return _short(f"X-Failed-Recipients: {failed}")
    sender = message.from_.address if message.from_ else ""
    local = _local_part(sender)
    if local == "mailer-daemon":
        return f"from the mail system ({sender})"
    if _BOUNCE_SUBJECT.match(message.subject.strip()) and (
        _null_sender(message) or local == "postmaster" or _auto_submitted(message) is not None
    ):
        return _short(f"bounce subject {message.subject.strip()!r}")
    return None


def _report_evidence(message: Inbound) -> str | None:
    ctype, report_type = _content_type(message)
    if ctype == "multipart/report":
        return f"machine-generated report (multipart/report; report-type={report_type or '?'})"
    return None


# ------------------------------------------------------------------------------------------
# Auto-replies, lists, system senders
# ------------------------------------------------------------------------------------------

# Headers that auto-responders, vacation programs and mail server rules put on what they
# send. Any value counts except one that says "no". X-Auto-Response-Suppress is set by
# Exchange on its automatic mail (OOF, NDRs, read receipts) and by bulk senders who do not
# want out-of-office answers; a person's message from Outlook does not carry it, so we treat
# it as "automatic" even though it literally only asks others not to auto-reply.
# X-MS-Exchange-Inbox-Rules-Loop marks mail an Exchange inbox rule produced (an OOF, a
# forward or redirect). X-Loop is what procmail recipes, vacation(1) and other desks add to
# mail they generate.
_AUTO_REPLY_HEADERS = (
    "x-autoreply",
    "x-autorespond",
    "x-autoreply-from",
    "x-mail-autoreply",
    "x-autogenerated",  # "Reply", "Forward", "Redirect", "Group", "Letter", "Mirror"
    "x-auto-response-suppress",
    "x-ms-exchange-inbox-rules-loop",
    "x-loop",
)
_NEGATIVE_VALUES = frozenset({"", "no", "false", "0", "none"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_AUTO_REPLY_PRECEDENCE = frozenset({"auto_reply", "auto-reply"})
_LIST_HEADERS = ("list-id", "list-unsubscribe", "list-post")

# Subjects that auto-responders put first, anchored at the start and ending in a colon (or
# the end of the subject), so "Autoreply settings broken?" or "Out of office hours support"
# from a customer still gets an answer. Bare "Auto:" is left out on purpose: it is German,
# Dutch, Polish... for "car" ("Auto: Termin zur Inspektion").
_AUTO_REPLY_SUBJECT = re.compile(
    r"""(?:automatic\ reply
        |auto[-\ ]?reply
        |auto[-\ ]?response
        |out\ of\ (?:the\ )?office(?:\ auto-?reply|\ reply)?
        |automatische\ antwort
        |abwesenheitsnotiz
        |r[ée]ponse\ automatique
        |absence\ du\ bureau
        |respuesta\ autom[áa]tica
        |risposta\ automatica
        |resposta\ autom[áa]tica
        |automatisch\ antwoord
        |automatyczna\ odpowied[źz]
        |autosvar
        |автоответ
        |автоматический\ ответ
        |нет\ на\ месте
        |автовідповідь
        )\s*(?::|$)""",
    re.IGNORECASE | re.VERBOSE,
)

# Local parts of addresses nobody reads. The local part is split at - _ . + = and a run of up
# to three pieces must spell one of these words exactly: "no-reply-billing", "do_not_reply",
# "mylist-bounces+anna=example.org" and "MAILER-DAEMON" match; "noreen", "replyto" and
# "bouncer" do not.
_SYSTEM_WORDS = frozenset(
    {
        "noreply",
        "donotreply",
        "dontreply",
        "mailerdaemon",
        "postmaster",
        "bounce",
        "bounces",
        "notification",
        "notifications",
    }
)
_LOCAL_SEPARATORS = re.compile(r"[-_.+=]")


def is_noreply_address(address: str) -> bool:
    """True for no-reply and mail-system addresses (see _SYSTEM_WORDS for the pattern)."""
    pieces = [p for p in _LOCAL_SEPARATORS.split(_local_part(address)) if p]
    for start in range(len(pieces)):
        word = ""
        for piece in pieces[start : start + 3]:  # "do-not-reply", the longest, is three
            word += piece
            if word in _SYSTEM_WORDS:
                return True
    return False


def _auto_reply_header_evidence(message: Inbound) -> str | None:
    for name, value in message.headers:
        if name in _AUTO_REPLY_HEADERS and value.strip().lower() not in _NEGATIVE_VALUES:
            return _short(f"{_label(name)}: {value}")
    for value in message.header_all("precedence"):
        if _keyword(value) in _AUTO_REPLY_PRECEDENCE:
            return _short(f"Precedence: {value}")
    return None


def _auto_reply_subject_evidence(message: Inbound) -> str | None:
    subject = unicodedata.normalize("NFC", message.subject).strip()
    if _AUTO_REPLY_SUBJECT.match(subject):
        return _short(f"auto-reply subject {subject!r}")
    return None


def _bulk_evidence(message: Inbound) -> str | None:
    for name in _LIST_HEADERS:
        value = message.header(name)
        if value is not None:
            return _short(f"{_label(name)}: {value}")
    for value in message.header_all("precedence"):
        if _keyword(value) in _BULK_PRECEDENCE:
            return _short(f"Precedence: {value}")
    return None


def _loop_evidence(message: Inbound, our_addresses: frozenset[str]) -> str | None:
    for name in ("x-loop", "x-ms-exchange-inbox-rules-loop"):
        for value in message.header_all(name):
            if any(a in our_addresses for a in _addresses_in(value)):
                return _short(f"{_label(name)} names us: {value}")
    return None


def _from_us(message: Inbound, our_addresses: frozenset[str]) -> str | None:
    if message.from_ is not None and message.from_.key in our_addresses:
        return f"from our own address {message.from_.key}"
    return None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


def _same_organisation(one: str, other: str) -> bool:
    """Equal domains, or one a subdomain of the other (mail.corp.example, corp.example)."""
    return one == other or one.endswith("." + other) or other.endswith("." + one)


# ------------------------------------------------------------------------------------------
# Whom an acknowledgement goes to, and what of the sender's words it may repeat
# ------------------------------------------------------------------------------------------


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
# Public helpers the pipeline may reuse
# ------------------------------------------------------------------------------------------


def is_bounce(message: Inbound) -> bool:
    """A delivery failure or delay report: never a requester, never acknowledged."""
    return _bounce_evidence(message) is not None


def is_auto_reply(message: Inbound) -> bool:
    """Sent by a machine in answer or on its own: Auto-Submitted other than "no", an
    auto-responder header, or an out-of-office style subject. Bounces from MTAs that set
    Auto-Submitted (Postfix, Exim) count too."""
    return (
        _auto_submitted(message) is not None
        or _auto_reply_header_evidence(message) is not None
        or _auto_reply_subject_evidence(message) is not None
    )


def is_bulk(message: Inbound) -> bool:
    """Mailing-list or bulk mail: List-Id/List-Unsubscribe/List-Post, or Precedence
    bulk/junk/list."""
    return _bulk_evidence(message) is not None


def is_loop(message: Inbound, our_addresses: frozenset[str]) -> bool:
    """From one of our addresses, or marked by X-Loop as having passed through us."""
    return (
        _from_us(message, our_addresses) is not None
        or _loop_evidence(message, our_addresses) is not None
    )


def is_automated(message: Inbound) -> bool:
    """Anything a machine sent: bounces and other reports, auto-replies, list and bulk mail,
    a null sender, a no-reply sender."""
    return (
        _report_evidence(message) is not None
        or is_bounce(message)
        or is_auto_reply(message)
        or is_bulk(message)
        or _null_sender(message)
        or (message.from_ is not None and is_noreply_address(message.from_.address))
    )


# ------------------------------------------------------------------------------------------
# The rules, in order
# ------------------------------------------------------------------------------------------


def _check_auto_submitted(message: Inbound, context: AckContext) -> str | None:
    value = _auto_submitted(message)
    return None if value is None else _short(f"Auto-Submitted: {value}")


def _check_null_sender(message: Inbound, context: AckContext) -> str | None:
    return "empty Return-Path <>" if _null_sender(message) else None


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
RULES: tuple[Rule, ...] = (
    Rule(
        "own-address",
        "From is one of our own addresses (a loop with ourselves or another desk instance)",
        lambda m, c: _from_us(m, c.our_addresses),
    ),
    Rule(
        "loop",
        "X-Loop or X-MS-Exchange-Inbox-Rules-Loop names one of our addresses",
        lambda m, c: _loop_evidence(m, c.our_addresses),
    ),
    Rule(
        "bounce",
        "a delivery failure or delay report from the mail system",
        lambda m, c: _bounce_evidence(m),
    ),
    Rule(
        "report",
        "another machine-generated report (multipart/report: read receipt, success notice)",
        lambda m, c: _report_evidence(m),
    ),
    Rule(
        "auto-submitted",
        'Auto-Submitted is present and not "no" (RFC 3834)',
        _check_auto_submitted,
    ),
    Rule(
        "auto-reply-headers",
        "an auto-responder header (X-Autoreply, X-Auto-Response-Suppress, Precedence auto_reply)",
        lambda m, c: _auto_reply_header_evidence(m),
    ),
    Rule(
        "bulk",
        "mailing-list or bulk mail (List-Id, List-Unsubscribe, Precedence bulk/junk/list)",
        lambda m, c: _bulk_evidence(m),
    ),
    Rule(
        "null-sender",
        "the envelope sender is empty (Return-Path <>): mail nobody may answer",
        _check_null_sender,
    ),
    Rule(
        "noreply-address",
        "From is a no-reply or mail-system address (noreply@, mailer-daemon@, bounces@)",
        _check_noreply,
    ),
    Rule(
        "auto-reply-subject",
        'the subject starts like an automatic reply ("Automatic reply:", "Автоответ:")',
        lambda m, c: _auto_reply_subject_evidence(m),
    ),
    Rule(
        "no-address",
        "there is no From address we could answer",
        _check_no_address,
    ),
    Rule(
        "reply-to-ticket",
        "a reply to an existing ticket (only new tickets are acknowledged)",
        _check_reply,
    ),
    Rule(
        "reply-to-other-domain",
        "Reply-To is in another domain than From, and no agent has answered the sender yet",
        _check_other_domain,
    ),
    Rule(
        "ack-limit",
        "the address we would answer already got ACK_LIMIT acknowledgements within the window",
        _check_limit,
    ),
    Rule(
        "sender-limit",
        "mail from this From address was acknowledged ACK_LIMIT times within the window",
        _check_sender_limit,
    ),
    Rule(
        "domain-limit",
        "mail from this From domain was acknowledged ACK_DOMAIN_LIMIT times within the window",
        _check_domain_limit,
    ),
)


def ack_decision(message: Inbound, context: AckContext) -> AckDecision:
    """The first rule that matches says no; when none does, acknowledge."""
    for rule in RULES:
        reason = rule.check(message, context)
        if reason is not None:
            return AckDecision(False, rule.name, f"no acknowledgement: {reason} ({rule.name})")
    return AckDecision(True, None, "acknowledge")


# ------------------------------------------------------------------------------------------
# What a bounce says
# ------------------------------------------------------------------------------------------

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
_HEADER_PARTS = ("message/rfc822", "message/global", "text/rfc822-headers")


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
        found = _addresses_in(_dsn_value(block.get(name, "")))
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
    reports = _dsn_blocks(message)
    if not reports:
        return None
    # Gmail names the failed message in the per-message block.
    ids = [normalize_msgid(b.get("x-original-message-id")) or "" for r in reports for b in r]
    blocks = _recipient_blocks(message)
    by_action: dict[str, list[dict[str, str]]] = {}
    for block in blocks:
        by_action.setdefault(_keyword(block.get("action", "")), []).append(block)
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
        _permanent(_keyword(first.get("action", "")), status),
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
    the returned message or its headers (message/rfc822, text/rfc822-headers), headers quoted
    in a plain-text bounce (Exim, qmail), and only when none of those exist, the bounce's own
    In-Reply-To and References (some MTAs set them to the failed message).
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
        recipients += _addresses_in(value)
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
