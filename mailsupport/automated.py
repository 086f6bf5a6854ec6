"""Was this message sent by a machine? Small named readers over its headers, no I/O.

Bounces and other reports, auto-replies and out-of-office answers, list and bulk mail, a null
sender, no-reply addresses, mail that names us in X-Loop. Each `*_evidence` function returns a
short reason fit for one line of `show`, or None; the `is_*` functions say yes or no. The
acknowledgement rules (ackrules.py) and the pipeline (reopening, bounces) ask here.

The checks follow RFC 3834 (never answer automatic mail, lists, or a null sender) plus the
loops other helpdesks shipped: out-of-office responders without Auto-Submitted, another
helpdesk's acknowledgements, our own mail coming back.
"""

from __future__ import annotations

import re
import unicodedata

from mailsupport.mail import Inbound

__all__ = [
    "AUTOMATIC_KINDS",
    "addresses_in",
    "auto_reply_header_evidence",
    "auto_reply_subject_evidence",
    "auto_submitted_evidence",
    "automatic_kind",
    "bounce_evidence",
    "bulk_evidence",
    "complaint_evidence",
    "delivery_status_blocks",
    "has_null_sender",
    "header_keyword",
    "is_auto_reply",
    "is_automated",
    "is_bounce",
    "is_bulk",
    "is_loop",
    "is_noreply_address",
    "loop_evidence",
    "own_address_evidence",
    "recipient_blocks",
    "report_evidence",
]


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


def header_keyword(value: str) -> str:
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


def addresses_in(value: str) -> list[str]:
    """Every address written in a header or report value, lowercased."""
    return [a.lower().rstrip(".") for a in _ADDRESS_IN_TEXT.findall(value)]


def _content_type(message: Inbound) -> tuple[str, str]:
    """The top-level content type and its report-type parameter (lowercased). parse() keeps
    neither as a field, so read them from the header."""
    value = message.header("content-type") or ""
    ctype = value.split(";", 1)[0].strip().lower()
    match = _REPORT_TYPE.search(value)
    return ctype, match.group(1).lower() if match else ""


_REPORT_TYPE = re.compile(r";\s*report-type\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)


def has_null_sender(message: Inbound) -> bool:
    """The envelope sender is empty (Return-Path: <>): mail nobody may answer."""
    # The topmost Return-Path is the one the final delivery wrote.
    value = message.header("return-path")
    return value is not None and value.replace(" ", "") in ("<>", "")


def _auto_submitted(message: Inbound) -> str | None:
    """The first Auto-Submitted value other than "no". An empty or unreadable value counts
    as automatic too: people's mail clients never write the header at all."""
    for value in message.header_all("auto-submitted"):
        if header_keyword(value) != "no":
            return value
    return None


def auto_submitted_evidence(message: Inbound) -> str | None:
    """The Auto-Submitted header that marks the message automatic (RFC 3834), if any."""
    value = _auto_submitted(message)
    return None if value is None else _short(f"Auto-Submitted: {value}")


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


def delivery_status_blocks(message: Inbound) -> list[list[dict[str, str]]]:
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


def recipient_blocks(message: Inbound) -> list[dict[str, str]]:
    """The per-recipient field blocks of every delivery-status part."""
    recipients = []
    for blocks in delivery_status_blocks(message):
        # The first block is about the message; the rest are one per recipient. Some
        # generators forget the per-message block, so look at the fields, not the position.
        recipients += [b for b in blocks if "final-recipient" in b or "action" in b]
    return recipients


def _only_success(message: Inbound) -> bool:
    """A delivery report that only says "delivered" or "relayed" (NOTIFY=SUCCESS)."""
    recipients = recipient_blocks(message)
    actions = [header_keyword(b.get("action", "")) for b in recipients]
    return bool(actions) and all(action in _SUCCESS_ACTIONS for action in actions)


def bounce_evidence(message: Inbound) -> str | None:
    """Why this is a delivery failure or delay report, if it is one."""
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
        has_null_sender(message) or local == "postmaster" or _auto_submitted(message) is not None
    ):
        return _short(f"bounce subject {message.subject.strip()!r}")
    return None


def report_evidence(message: Inbound) -> str | None:
    """Why this is a machine-generated report: multipart/report of any kind (ARF abuse
    reports are report-type=feedback-report), or a provider's complaint mail."""
    ctype, report_type = _content_type(message)
    if ctype == "multipart/report":
        return f"machine-generated report (multipart/report; report-type={report_type or '?'})"
    return complaint_evidence(message)


# Mailbox providers that are not ARF send complaints (a recipient pressed "This is spam") as
# a plain mail with the complained-about message attached. A customer forwarding a message
# attaches one too, so the attachment alone proves nothing: it takes a complaint sender
# (fbl@, abuse@...) and a report subject or automatic sign, or Microsoft's JMRP header.
_COMPLAINT_WORDS = frozenset(
    {"abuse", "fbl", "feedbackloop", "complaints", "complaint", "scomp", "spamreport"}
)
_COMPLAINT_SUBJECT = re.compile(
    r"(?:complaint|abuse\ report|spam\ report|feedback\ loop|fbl\b|reported\ as\ spam)",
    re.IGNORECASE | re.VERBOSE,
)
_ATTACHED_MESSAGE = ("message/rfc822", "message/global")


def complaint_evidence(message: Inbound) -> str | None:
    """A provider's complaint about mail we sent (not ARF): see _COMPLAINT_WORDS."""
    if not any(a.content_type in _ATTACHED_MESSAGE for a in message.attachments):
        return None
    value = message.header("x-hmxmroriginalrecipient")  # Microsoft JMRP
    if value is not None:
        return _short(f"complaint report (X-HmXmrOriginalRecipient: {value})")
    sender = message.from_.address if message.from_ else ""
    pieces = set(_LOCAL_SEPARATORS.split(_local_part(sender)))
    if not pieces & _COMPLAINT_WORDS:
        return None
    automatic = has_null_sender(message) or _auto_submitted(message) is not None
    if automatic or _COMPLAINT_SUBJECT.search(message.subject):
        return _short(f"complaint report from {sender}")
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
# RFC 2369 and 2919 list headers, then what list managers write without them on their own
# notices (subscription confirmations, moderation requests): ezmlm and Yahoo Groups
# (Mailing-List), Fml and other Japanese managers (X-ML-Server, X-MLServer, X-ML-Info).
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-subscribe",
    "list-help",
    "list-owner",
    "mailing-list",
    "x-ml-server",
    "x-mlserver",
    "x-ml-info",
    "x-ml-name",
)

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


def auto_reply_header_evidence(message: Inbound) -> str | None:
    """The auto-responder header (or Precedence: auto_reply) the message carries."""
    for name, value in message.headers:
        if name in _AUTO_REPLY_HEADERS and value.strip().lower() not in _NEGATIVE_VALUES:
            return _short(f"{_label(name)}: {value}")
    for value in message.header_all("precedence"):
        if header_keyword(value) in _AUTO_REPLY_PRECEDENCE:
            return _short(f"Precedence: {value}")
    return None


def auto_reply_subject_evidence(message: Inbound) -> str | None:
    """The subject, when it starts like an automatic reply."""
    subject = unicodedata.normalize("NFC", message.subject).strip()
    if _AUTO_REPLY_SUBJECT.match(subject):
        return _short(f"auto-reply subject {subject!r}")
    return None


def bulk_evidence(message: Inbound) -> str | None:
    """The list header or bulk Precedence the message carries."""
    for name in _LIST_HEADERS:
        value = message.header(name)
        if value is not None:
            return _short(f"{_label(name)}: {value}")
    for value in message.header_all("precedence"):
        if header_keyword(value) in _BULK_PRECEDENCE:
            return _short(f"Precedence: {value}")
    return None


def loop_evidence(message: Inbound, our_addresses: frozenset[str]) -> str | None:
    """The X-Loop (or Exchange inbox-rules loop) header that names one of our addresses."""
    for name in ("x-loop", "x-ms-exchange-inbox-rules-loop"):
        for value in message.header_all(name):
            if any(a in our_addresses for a in addresses_in(value)):
                return _short(f"{_label(name)} names us: {value}")
    return None


def own_address_evidence(message: Inbound, our_addresses: frozenset[str]) -> str | None:
    """From is one of our own addresses."""
    if message.from_ is not None and message.from_.key in our_addresses:
        return f"from our own address {message.from_.key}"
    return None


# ------------------------------------------------------------------------------------------
# Yes or no, for the pipeline
# ------------------------------------------------------------------------------------------


def is_bounce(message: Inbound) -> bool:
    """A delivery failure or delay report: never a requester, never acknowledged."""
    return bounce_evidence(message) is not None


def is_auto_reply(message: Inbound) -> bool:
    """Sent by a machine in answer or on its own: Auto-Submitted other than "no", an
    auto-responder header, or an out-of-office style subject. Bounces from MTAs that set
    Auto-Submitted (Postfix, Exim) count too."""
    return (
        _auto_submitted(message) is not None
        or auto_reply_header_evidence(message) is not None
        or auto_reply_subject_evidence(message) is not None
    )


def is_bulk(message: Inbound) -> bool:
    """Mailing-list or bulk mail: a list header (List-Id, List-Subscribe, a list manager's
    Mailing-List or X-ML-Server...), or Precedence bulk/junk/list."""
    return bulk_evidence(message) is not None


def is_loop(message: Inbound, our_addresses: frozenset[str]) -> bool:
    """From one of our addresses, or marked by X-Loop as having passed through us."""
    return (
        own_address_evidence(message, our_addresses) is not None
        or loop_evidence(message, our_addresses) is not None
    )


# The kinds of automatic mail a ticket may be opened by (Ticket.automatic), in the order
# they are told apart.
AUTOMATIC_KINDS = ("bounce", "feedback-report", "report", "loop", "auto-reply", "bulk", "no-reply")


def automatic_kind(message: Inbound, our_addresses: frozenset[str] = frozenset()) -> str:
    """Which kind of automatic mail this is (one of AUTOMATIC_KINDS), or "" for a person.
    Every kind is also a reason ackrules.py gives for no acknowledgement."""
    if is_bounce(message):
        return "bounce"
    ctype, report_type = _content_type(message)
    if report_type == "feedback-report" or complaint_evidence(message) is not None:
        return "feedback-report"
    if ctype == "multipart/report":
        return "report"
    if loop_evidence(message, our_addresses) is not None:
        return "loop"
    if is_auto_reply(message):
        return "auto-reply"
    if is_bulk(message):
        return "bulk"
    if has_null_sender(message) or (
        message.from_ is not None and is_noreply_address(message.from_.address)
    ):
        return "no-reply"
    return ""


def is_automated(message: Inbound) -> bool:
    """Anything a machine sent: bounces and other reports, auto-replies, list and bulk mail,
    a null sender, a no-reply sender."""
    return (
        report_evidence(message) is not None
        or is_bounce(message)
        or is_auto_reply(message)
        or is_bulk(message)
        or has_null_sender(message)
        or (message.from_ is not None and is_noreply_address(message.from_.address))
    )
