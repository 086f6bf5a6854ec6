"""Plain data that flows through the pipeline. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: display name (decoded) and address (as written, compare with `.key`)."""

    name: str
    address: str

    @property
    def key(self) -> str:
        """The address lowercased, for comparisons and lookups."""
        return self.address.lower()

    def as_json(self) -> dict[str, str]:
        """As messages store their To and Cc lists."""
        return {"name": self.name, "address": self.address}

    def __str__(self) -> str:
        if self.name:
            return f"{self.name} <{self.address}>"
        return self.address


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment or inline part. `filename` is already safe to use as a file name."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed message. Message-IDs are stored without angle brackets."""

    message_id: str
    message_id_generated: bool
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None  # timezone-aware UTC, None when missing or unreadable
    text: str
    html: str | None  # sanitized, safe to show; None when the message had no HTML
    attachments: tuple[Attachment, ...] = ()
    # Decoded header (name lowercased, value) pairs in message order, for the rules.
    headers: tuple[tuple[str, str], ...] = ()
    # Human-readable notes on damage found while parsing (broken MIME, bad charset, ...).
    defects: tuple[str, ...] = field(default=())
    # Why the From header names no single clear mailbox ("" = it does): several From
    # headers or addresses, or a display name that is another address. Such a sender is
    # a stranger, whatever address `from_` holds.
    sender_doubt: str = ""
    # The search stems of the subject and the text (store/stems.py), when the parse worker
    # computed them beside the parse; None: computed when the message is stored.
    stems: tuple[str, str] | None = None
    # The report's terms of the text (topicterms.text_terms), likewise; None: found when a
    # ticket is opened with it.
    text_terms: dict[tuple[str, ...], list[str]] | None = None
    # A new ticket's terms but their first line (topicterms.ticket_terms_body), for the
    # title the worker expects it to have (its subject as the default ticket tag leaves it):
    # (title, terms). Used when the ticket's title is that title.
    title_terms: tuple[str, str] | None = None
    # `headers` by name, made at the first lookup: intake asks for about three dozen headers
    # a message (the rules about automatic mail), each a walk through all of them before.
    _by_name: dict[str, list[str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        found = self._named().get(name.lower())
        return found[0] if found else None

    def header_all(self, name: str) -> list[str]:
        return list(self._named().get(name.lower(), ()))

    def _named(self) -> dict[str, list[str]]:
        if self._by_name is None:
            by_name: dict[str, list[str]] = {}
            for key, value in self.headers:
                by_name.setdefault(key, []).append(value)
            object.__setattr__(self, "_by_name", by_name)  # (frozen: a cache, not a field)
        return self._by_name  # type: ignore[return-value]
