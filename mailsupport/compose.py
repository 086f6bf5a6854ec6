"""Outgoing mail: ticket facts and templates -> an EmailMessage with correct threading headers.

Pure: no clock reads (`now` is passed in), no sockets, no database. The only side effect is
randomness for Message-IDs (made and signed in signing.py).

Every value that comes from mail or the command line (subjects, names, addresses, file
names) passes through `clean_header` here, at the boundary, so a CR or LF in it can never
start a header of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import headerregistry
from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime
from typing import Any, Literal

from mailsupport import wire
from mailsupport.errors import ComposeError
from mailsupport.mail import Address, Inbound
from mailsupport.parsing import safe_filename
from mailsupport.quoting import new_text
from mailsupport.signing import ascii_domain, make_message_id
from mailsupport.templating import BodyContext, Templates
from mailsupport.threads import normalize_subject, tag_pattern_of

__all__ = [
    "POLICY",
    "ComposeError",
    "Composed",
    "Draft",
    "Kind",
    "Sender",
    "ThreadParent",
    "clean_header",
    "compose",
    "format_date",
    "quote_text",
    "reply_subject",
    "thread_headers",
]

Kind = Literal["ack", "reply", "closed"]

MAX_REFERENCES = 21  # the thread's first Message-ID and the last 20
QUOTE_MAX_LINES = 60
QUOTE_MAX_CHARS = 6000
SUBJECT_MAX_CHARS = 200
NAME_MAX_CHARS = 200

# Automatic mail says so (RFC 3834), and asks Exchange/Outlook not to answer it with
# out-of-office notices, which would land in the ticket or loop. No "Precedence": RFC 3834
# advises against relying on it, and "bulk"/"junk" make filters treat the mail as bulk mail.
# An agent's reply is written by a person: no Auto-Submitted, so the customer's own
# auto-responders behave as they would for any personal mail.
_KIND_HEADERS: dict[str, tuple[tuple[str, str], ...]] = {
    "ack": (("Auto-Submitted", "auto-replied"), ("X-Auto-Response-Suppress", "All")),
    # Not a response to a message but generated on an event: "auto-generated".
    "closed": (("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")),
    "reply": (),
}


# ------------------------------------------------------------------------------------------
# Plain data in and out
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sender:
    name: str  # SUPPORT_NAME
    address: str  # SUPPORT_ADDRESS; our Message-IDs use its domain


@dataclass(frozen=True, slots=True)
class ThreadParent:
    """The message being answered (the customer's last one). IDs without angle brackets."""

    message_id: str  # "" when the message had no Message-ID of its own
    references: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    subject: str
    from_name: str
    from_address: str
    date: datetime | None
    text: str

    @classmethod
    def from_inbound(cls, message: Inbound) -> ThreadParent:
        sender = message.from_
        return cls(
            # An ID the parser made up is unknown to the customer's mail client.
            message_id="" if message.message_id_generated else message.message_id,
            references=message.references,
            in_reply_to=message.in_reply_to,
            subject=message.subject,
            from_name=sender.name if sender else "",
            from_address=sender.address if sender else "",
            date=message.date,
            text=message.text,
        )


@dataclass(frozen=True, slots=True)
class Composed:
    message_id: str  # without angle brackets, as the project stores IDs
    data: bytes  # the message as it is queued and sent: CRLF line ends, 7-bit
    text: str  # the rendered plain text body, to store with the ticket
    html: str | None
    subject: str = ""
    in_reply_to: str | None = None  # IDs without angle brackets
    references: tuple[str, ...] = ()
    _parsed: list[EmailMessage] = field(default_factory=list, repr=False, compare=False)

    @property
    def message(self) -> EmailMessage:
        """`data` parsed back (once), for reading what will be sent."""
        if not self._parsed:
            self._parsed.append(BytesParser(policy=POLICY).parsebytes(self.data))
        return self._parsed[0]


# ------------------------------------------------------------------------------------------
# Headers: sanitizing, Message-IDs, policy
# ------------------------------------------------------------------------------------------

# Everything that ends a line for some mail or Python code path: C0 controls (CR, LF, NUL,
# VT, FF, FS/GS/RS), DEL, NEL and the Unicode line and paragraph separators.
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_SPACES = re.compile(r" {2,}")


def clean_header(value: str) -> str:
    """Text safe for one header: control characters become spaces, runs of spaces one."""
    return _SPACES.sub(" ", _LINE_BREAKERS.sub(" ", value)).strip()


_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_body(text: str) -> str:
    """Newlines as \\n, no control characters besides tab and newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _BODY_CONTROLS.sub("", text)


# An address's plainest forms (RFC 5322 dot-atom, a host name), in which the stdlib's parse
# finds the text as it is.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_HOST_NAME = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_MSGID_CHARS = re.compile(r"[!-;=?-~]+")  # printable ASCII without space, "<" and ">"


def _clean_id(value: str) -> str | None:
    """A stored Message-ID fit for a header, or None.

    IDs in `.invalid` domains are made up by our parser (none given, or longer than it
    keeps) and would mean nothing to anyone else.
    """
    value = value.strip().removeprefix("<").removesuffix(">")
    if not _MSGID_CHARS.fullmatch(value) or value.lower().endswith(".invalid"):
        return None
    return value


class _MsgIdHeader(headerregistry.UnstructuredHeader):
    """Message-ID, In-Reply-To, References: folded between IDs and never encoded.

    The stdlib folds these as unstructured text and turns an ID longer than a line into
    RFC 2047 encoded words, which no mail reader decodes in these headers.
    """

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["parse_tree"] = None
        kwds["decoded"] = value

    def fold(self, *, policy: Any) -> str:
        return wire.fold(self.name, str(self).split(), "").replace(wire.CRLF, policy.linesep)


_HEADERS = headerregistry.HeaderRegistry()
for _name in ("message-id", "in-reply-to", "references"):
    _HEADERS.map_to_type(_name, _MsgIdHeader)

# CRLF line ends, RFC 2047 for non-ASCII headers, and 7-bit bodies (quoted-printable or
# base64, whichever is shorter) so no relay on the way needs 8BITMIME.
POLICY: EmailPolicy = SMTP.clone(cte_type="7bit", header_factory=_HEADERS)


def _mailbox(name: str, address: str) -> headerregistry.Address:
    address = clean_header(address)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or " " in address:
        raise ComposeError(f"invalid email address {address!r}")
    if not local.isascii():
        raise ComposeError(
            f"cannot send to {address!r}: non-ASCII before the @ needs SMTPUTF8, "
            "which mailsupport does not use"
        )
    display = clean_header(name)[:NAME_MAX_CHARS]
    domain = ascii_domain(domain)
    try:
        if _DOT_ATOM.fullmatch(local) and _HOST_NAME.fullmatch(domain):
            # What the parse below would find, without it (the most of an address's cost)
            return headerregistry.Address(display_name=display, username=local, domain=domain)
        return headerregistry.Address(display_name=display, addr_spec=f"{local}@{domain}")
    except (ValueError, IndexError, MessageError):
        raise ComposeError(f"invalid email address {address!r}") from None


def _mailboxes(addresses: Iterable[Address], exclude: set[str]) -> list[headerregistry.Address]:
    """Valid mailboxes without duplicates, and without anything in `exclude` (lowercased
    addresses); adds what it keeps to `exclude`."""
    kept = []
    for address in addresses:
        mailbox = _mailbox(address.name, address.address)
        key = mailbox.addr_spec.lower()
        if key not in exclude:
            exclude.add(key)
            kept.append(mailbox)
    return kept


# ------------------------------------------------------------------------------------------
# Subject and threading
# ------------------------------------------------------------------------------------------


def reply_subject(
    subject: str,
    number: int,
    tag_format: str,
    tag_pattern: re.Pattern[str],
    *,
    reply: bool = True,
) -> str:
    """`Re: <subject> [#N]`: prefixes and tags already in `subject` are dropped first, so
    neither piles up over repeated replies. Without `reply`, no "Re:"."""
    base = normalize_subject(clean_header(subject), tag_pattern)
    if len(base) > SUBJECT_MAX_CHARS:
        base = base[:SUBJECT_MAX_CHARS].rstrip() + "…"
    tag = clean_header(tag_format.replace("{number}", str(number)))
    return " ".join(part for part in ("Re:" if reply else "", base, tag) if part)


def thread_headers(parent: ThreadParent) -> tuple[str | None, tuple[str, ...]]:
    """(In-Reply-To, References) for an answer to `parent`, as RFC 5322 section 3.6.4 says:
    References are the parent's References (or, without them, its In-Reply-To when that
    holds a single ID) followed by the parent's Message-ID. Long chains keep their first ID
    and the last 20."""
    own = _clean_id(parent.message_id)
    chain = [i for i in (_clean_id(x) for x in parent.references) if i]
    if not parent.references and len(parent.in_reply_to) == 1:
        chain = [i for i in (_clean_id(parent.in_reply_to[0]),) if i]
    if own:
        chain = [i for i in chain if i != own] + [own]
    chain = list(dict.fromkeys(chain))
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1) :]
    return own, tuple(chain)


# ------------------------------------------------------------------------------------------
# Bodies: quoting, dates
# ------------------------------------------------------------------------------------------

_MONTHS = {
    "en": (
        "January", "February", "March", "April", "May", "June", "July", "August",
        "September", "October", "November", "December",
    ),
    "ru": (
        "января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
        "сентября", "октября", "ноября", "декабря",
    ),
}  # fmt: skip


def format_date(when: datetime, language: str) -> str:
    """`when` as "2 March 2026 at 09:20 UTC" or "2 марта 2026 г. в 09:20 UTC".

    In UTC: the customer's own offset is not kept. Naive times are taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if language == "ru":
        return f"{when.day} {_MONTHS['ru'][when.month - 1]} {when.year} г. в {when:%H:%M} UTC"
    return f"{when.day} {_MONTHS['en'][when.month - 1]} {when.year} at {when:%H:%M} UTC"


def quote_text(
    text: str, max_lines: int = QUOTE_MAX_LINES, max_chars: int = QUOTE_MAX_CHARS
) -> str:
    """The customer's message as a "> " quote, without the history it quoted itself and
    cut at `max_lines` lines or `max_chars` characters (marked "> [...]")."""
    all_lines = [line.rstrip() for line in _clean_body(text).split("\n")]
    lines = new_text(all_lines)
    if not lines:  # nothing but quoted text: quote all of it
        lines = "\n".join(all_lines).strip("\n").split("\n")
    if lines == [""]:
        return ""
    kept: list[str] = []
    size = 0
    cut = len(lines) > max_lines
    for line in lines[:max_lines]:
        if size + len(line) > max_chars:  # a long unbroken paragraph keeps its start
            kept.append(line[: max(max_chars - size, 0)].rstrip())
            cut = True
            break
        kept.append(line)
        size += len(line) + 1
    quoted = ["> " + line if line else ">" for line in kept]
    if cut:
        quoted.append("> [...]")
    return "\n".join(quoted)


def _greeting_name(name: str) -> str:
    """A display name fit to greet someone with; "" for none or for an address."""
    name = clean_header(name).strip("\"' ")
    return "" if "@" in name else name[:NAME_MAX_CHARS]


def _author(parent: ThreadParent) -> str:
    return _greeting_name(parent.from_name) or clean_header(parent.from_address)


# ------------------------------------------------------------------------------------------
# The message
# ------------------------------------------------------------------------------------------

_CONTENT_TYPE = re.compile(r"([a-z0-9][a-z0-9!#$&^_.+-]*)/([a-z0-9][a-z0-9!#$&^_.+-]*)")


def _split_content_type(value: str) -> tuple[str, str]:
    match = _CONTENT_TYPE.fullmatch(clean_header(value).lower().split(";")[0].strip())
    # multipart/* and message/* cannot carry opaque bytes in base64 (RFC 2046).
    if not match or match[1] in ("multipart", "message"):
        return "application", "octet-stream"
    return match[1], match[2]


def compose(
    kind: Kind,
    *,
    sender: Sender,
    to: Sequence[Address],
    cc: Sequence[Address] = (),
    ticket_number: int,
    ticket_subject: str,
    parent: ThreadParent | None,
    language: str,
    templates: Templates,
    secret: bytes,
    now: datetime,
    text: str = "",
    agent_name: str = "",
    attachments: Sequence[tuple[str, str, bytes]] = (),
    tag_format: str = "[#{number}]",
    tag_pattern: re.Pattern[str] | None = None,
    articles: Sequence[tuple[str, str]] = (),
) -> Composed:
    """One outgoing message of `kind`, answering `parent` when given.

    `to[0]` is greeted by name. Duplicate recipients and our own address are dropped from
    To and Cc (filter aliases before calling). Every template is rendered before anything
    is built: a template error raises TemplateError and nothing is produced.
    """
    if kind not in _KIND_HEADERS:
        raise ValueError(f"unknown kind of message: {kind!r}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    if kind == "reply" and not text.strip():
        raise ComposeError("a reply needs some text")
    pattern = tag_pattern or tag_pattern_of(tag_format)

    from_ = _mailbox(sender.name, sender.address)
    taken = {from_.addr_spec.lower()}
    recipients = _mailboxes(to, taken)
    copies = _mailboxes(cc, taken)
    if not recipients:
        raise ComposeError("no one to send the message to (no To address but our own)")

    # Follow the subject the customer sees in the conversation; the ticket's title when
    # there is none.
    if parent is not None and normalize_subject(parent.subject, pattern):
        base = parent.subject
    else:
        base = ticket_subject
    subject = reply_subject(base, ticket_number, tag_format, pattern, reply=parent is not None)
    in_reply_to, references = thread_headers(parent) if parent else (None, ())

    context = BodyContext(
        kind=kind,
        language=language,
        ticket_number=ticket_number,
        ticket_tag=clean_header(tag_format.replace("{number}", str(ticket_number))),
        ticket_subject=normalize_subject(clean_header(ticket_subject), pattern),
        subject=subject,
        customer_name=_greeting_name(recipients[0].display_name),
        customer_address=recipients[0].addr_spec,
        support_name=from_.display_name,
        support_address=from_.addr_spec,
        agent_name=clean_header(agent_name)[:NAME_MAX_CHARS],
        text=_clean_body(text).strip("\n"),
        quote=quote_text(parent.text) if parent else "",
        quote_name=_author(parent) if parent else "",
        quote_date=format_date(parent.date, language) if parent and parent.date else "",
        date=format_date(now, language),
        articles=[
            {"title": clean_header(title), "text": _clean_body(body).strip("\n")}
            for title, body in articles
        ],
    )
    rendered = templates.render(kind, language, context)  # may raise: nothing built yet

    message_id = make_message_id(secret, from_.domain, now)
    draft = Draft(
        from_=from_,
        to=tuple(recipients),
        cc=tuple(copies),
        subject=subject,
        date=format_datetime(now),
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        extra=_KIND_HEADERS[kind],
        text=rendered.text,
        html=rendered.html,
        attachments=tuple(attachments),
    )
    return draft.composed()


@dataclass(frozen=True, slots=True)
class Draft:
    """Everything an outgoing message says, decided; `composed()` writes it."""

    from_: headerregistry.Address
    to: tuple[headerregistry.Address, ...]
    cc: tuple[headerregistry.Address, ...]
    subject: str
    date: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    extra: tuple[tuple[str, str], ...]  # Auto-Submitted and the like
    text: str
    html: str | None
    attachments: tuple[tuple[str, str, bytes], ...] = ()

    def composed(self) -> Composed:
        # With attachments (agents' replies, seldom), the email package writes the mail;
        # everything else, acknowledgements above all, is written directly.
        data = self.email_bytes() if self.attachments else self.wire_bytes()
        return Composed(
            message_id=self.message_id,
            data=data,
            text=self.text,
            html=self.html,
            subject=self.subject,
            in_reply_to=self.in_reply_to,
            references=self.references,
        )

    def wire_bytes(self) -> bytes:
        """The message written by `wire` (no attachments)."""
        if self.attachments:
            raise ValueError("wire_bytes() writes no attachments: use email_bytes()")
        lines = [
            wire.address_header("From", [_wire_mailbox(self.from_)]),
            wire.address_header("To", [_wire_mailbox(a) for a in self.to]),
        ]
        if self.cc:
            lines.append(wire.address_header("Cc", [_wire_mailbox(a) for a in self.cc]))
        lines += [wire.header("Subject", self.subject), wire.header("Date", self.date)]
        lines.append(wire.id_header("Message-ID", [self.message_id]))
        if self.in_reply_to:
            lines.append(wire.id_header("In-Reply-To", [self.in_reply_to]))
        if self.references:
            lines.append(wire.id_header("References", self.references))
        lines += [wire.header(name, value) for name, value in self.extra]
        if self.extra:
            lines.append(wire.header("X-Loop", self.from_.addr_spec))
        return wire.text_message(lines, self.text, self.html)

    def email_bytes(self) -> bytes:
        """The message written by the email package."""
        return self.email_message().as_bytes()

    def email_message(self) -> EmailMessage:
        message = EmailMessage(policy=POLICY)
        message["From"] = self.from_
        message["To"] = self.to
        if self.cc:
            message["Cc"] = self.cc
        message["Subject"] = self.subject
        message["Date"] = self.date
        message["Message-ID"] = f"<{self.message_id}>"
        if self.in_reply_to:
            message["In-Reply-To"] = f"<{self.in_reply_to}>"
        if self.references:
            message["References"] = " ".join(f"<{i}>" for i in self.references)
        for name, value in self.extra:
            message[name] = value
        if self.extra:
            # Automatic mail says it passed through us: another desk (or we ourselves,
            # should it come back) sees the loop even when Auto-Submitted is lost.
            message["X-Loop"] = self.from_.addr_spec
        message.set_content(self.text)
        if self.html is not None:
            message.add_alternative(self.html, subtype="html")
        for index, (filename, content_type, data) in enumerate(self.attachments, start=1):
            maintype, subtype = _split_content_type(content_type)
            name = safe_filename(clean_header(filename), index, f"{maintype}/{subtype}")
            message.add_attachment(bytes(data), maintype=maintype, subtype=subtype, filename=name)
        for part in message.walk():  # the stdlib repeats MIME-Version in every subpart
            if part is not message:
                del part["MIME-Version"]
        return message


def _wire_mailbox(address: headerregistry.Address) -> str:
    return wire.mailbox(address.display_name, address.addr_spec)


def compose_notice(
    *,
    sender: Sender,
    to: str,
    subject: str,
    text: str,
    secret: bytes,
    now: datetime,
    message_id: str = "",
) -> Composed:
    """A plain internal notice to a team address or an agent (an escalation, a
    notification), not a customer's mail: no template, no threading, marked automatic so
    that no responder answers it. `message_id` is a notification's, with its reply token."""
    from_ = _mailbox(sender.name, sender.address)
    recipient = _mailbox("", to)
    draft = Draft(
        from_=from_,
        to=(recipient,),
        cc=(),
        subject=clean_header(subject)[:SUBJECT_MAX_CHARS],
        date=format_datetime(now),
        message_id=message_id or make_message_id(secret, from_.domain, now),
        in_reply_to=None,
        references=(),
        extra=(("Auto-Submitted", "auto-generated"), ("X-Auto-Response-Suppress", "All")),
        text=_clean_body(text).strip("\n") + "\n",
        html=None,
    )
    return draft.composed()
