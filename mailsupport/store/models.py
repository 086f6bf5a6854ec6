"""Tables. Times are timezone-aware UTC; Message-IDs are stored without angle brackets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from mailsupport.store import AGENT_ANSWERS, PRIORITY_RANK

# Re-exported: they live in mailsupport.store so that they load without SQLAlchemy.
from mailsupport.store import DIRECTIONS as DIRECTIONS
from mailsupport.store import PRIORITIES as PRIORITIES
from mailsupport.store import TICKET_STATUSES as TICKET_STATUSES
from mailsupport.store.stems import column_default, restem


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Any) -> Any:
        """On SQLite, one function for what process_bind_param and SQLite's DATETIME do in
        turn (its default storage format, which isoformat with microseconds writes): a
        message's row holds several times, and the two steps cost intake more than the
        INSERT. Elsewhere SQLAlchemy's own chain."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is not None and value.tzinfo is UTC:  # nearly always: "+00:00" cut off
                return value.isoformat(" ", "microseconds")[:-6]
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _time(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


def _stems(name: str) -> Any:
    return Field(
        default=None,
        sa_type=sa.Text,
        nullable=False,
        sa_column_kwargs={"default": column_default(name), "server_default": ""},
    )


def _by_priority() -> tuple[sa.TextClause, ...]:
    """The order of `list --sort priority` (store/queries.SORTS), as index columns."""
    return (sa.text(PRIORITY_RANK), sa.text("updated_at DESC"), sa.text("id DESC"))


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    # Every filter of `list` is indexed together with its default order.
    __table_args__ = (
        sa.Index("ix_tickets_assignee_updated_at", "assignee", "updated_at"),
        sa.Index("ix_tickets_queue_updated_at", "queue", "updated_at"),
        sa.Index("ix_tickets_priority_updated_at", "priority", "updated_at"),
        sa.Index("ix_tickets_status_updated_at", "status", "updated_at"),
        sa.Index("ix_tickets_line_updated_at", "line", "updated_at"),
        sa.Index("ix_tickets_type_updated_at", "type", "updated_at"),
        sa.Index("ix_tickets_mailbox_updated_at", "mailbox", "updated_at"),
        sa.Index("ix_tickets_last_writer_updated_at", "last_writer", "updated_at"),
        sa.Index("ix_tickets_waiting_assignee", "last_writer", "assignee", "updated_at"),
        # `--sort priority`, and `next`: an agent's waiting tickets in that order.
        sa.Index("ix_tickets_priority_rank", *_by_priority()),
        sa.Index("ix_tickets_waiting_priority", "last_writer", "assignee", *_by_priority()),
        sa.Index("ix_tickets_requester_updated_at", "requester", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    number: int | None = Field(default=None, unique=True)
    subject: str = Field(sa_type=sa.Text)
    status: str = Field(default="new", max_length=16, index=True)
    priority: str = Field(default="normal", max_length=16)
    requester: str = Field(default="", sa_type=sa.Text)
    requester_name: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = _time(index=True)
    updated_at: datetime = _time(index=True)
    closed_at: datetime | None = _time(default=None)
    merged_into_id: int | None = Field(default=None, foreign_key="tickets.id")
    assignee: str | None = Field(default=None, sa_type=sa.Text)  # the agent's name
    queue: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    # Opened by a reply to a ticket closed longer than REOPEN_DAYS: that ticket.
    follows_id: int | None = Field(default=None, foreign_key="tickets.id")
    # Classification and routing: question, incident, bug, billing, access, ... ("" = none).
    type: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    line: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # 1 = first line
    # SLA: when an agent first answered, and when the answer and the resolution are due.
    first_response_at: datetime | None = _time(default=None)
    first_response_due: datetime | None = _time(default=None, index=True)
    resolution_due: datetime | None = _time(default=None, index=True)
    # Opened by automatic mail: its kind (automated.AUTOMATIC_KINDS: bounce, auto-reply,
    # bulk...), "" when a person wrote. Such tickets get no mail and no SLA, and are no work
    # in the report.
    automatic: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    # The mailbox (mailboxes.py) the customer wrote to; our mail on the ticket comes from its
    # address. "" = the default mailbox (tickets filed before there were several).
    mailbox: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    # Who wrote last: "customer" (their mail: the ball is in our court), "us" (an agent's
    # reply or notice), "" (nobody yet). Acknowledgements and notes do not count.
    last_writer: str = Field(default="", max_length=16, sa_column_kwargs={"server_default": ""})
    # The words and phrases of the subject and first incoming message that the report
    # counts (mailsupport.topicterms), stored when that message is filed; None: none yet.
    topic_terms: str | None = Field(default=None, sa_type=sa.Text)


class TicketTag(SQLModel, table=True):
    __tablename__ = "ticket_tags"

    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    tag: str = Field(sa_type=sa.Text, primary_key=True, index=True)


class RawMessage(SQLModel, table=True):
    """The bytes of a message exactly as they arrived, stored before anything can fail."""

    __tablename__ = "raw_messages"

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True)
    size: int
    data: bytes = Field(sa_type=sa.LargeBinary)
    origin: str = Field(default="", sa_type=sa.Text)
    stored_at: datetime = _time()


def _partial_index(name: str, where: str, *columns: str) -> sa.Index:
    """An index of `columns` over the rows matching `where` only, on both backends."""
    return sa.Index(name, *columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        sa.Index("ix_messages_ack_to_created_at", "ack_to", "created_at"),
        # Partial: only acknowledged messages have these, and intake writes every message.
        _partial_index(
            "ix_messages_ack_from_created_at", "ack_from IS NOT NULL", "ack_from", "created_at"
        ),
        _partial_index(
            "ix_messages_ack_domain_created_at",
            "ack_domain IS NOT NULL",
            "ack_domain",
            "created_at",
        ),
        _partial_index("ix_messages_agent_answers", AGENT_ANSWERS, "ticket_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    message_id: str = Field(sa_type=sa.Text, unique=True)
    direction: str = Field(max_length=8)  # in / out / note
    in_reply_to: str = Field(default="", sa_type=sa.Text)  # space-separated IDs
    refs: str = Field(default="", sa_type=sa.Text)  # References, space-separated IDs
    from_address: str = Field(default="", sa_type=sa.Text)
    from_name: str = Field(default="", sa_type=sa.Text)
    to: list[dict[str, str]] = Field(default_factory=list, sa_type=sa.JSON)
    cc: list[dict[str, str]] = Field(default_factory=list, sa_type=sa.JSON)
    subject: str = Field(default="", sa_type=sa.Text)
    date: datetime | None = _time(default=None)  # the Date header
    received_at: datetime = _time()  # when the source got it; orders the conversation
    text: str = Field(default="", sa_type=sa.Text)
    html: str | None = Field(default=None, sa_type=sa.Text)  # sanitized
    raw_id: int | None = Field(default=None, foreign_key="raw_messages.id")
    thread_reason: str = Field(default="", sa_type=sa.Text)  # why it joined its ticket
    defects: str = Field(default="", sa_type=sa.Text)
    # The agent who wrote a reply or a note ("" for mail and automatic messages).
    author: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    # Incoming mail: whether it was acknowledged and why not ("" when never considered).
    ack_decision: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    ack_to: str | None = Field(default=None, sa_type=sa.Text)  # lowercased, when acknowledged
    # When acknowledged: the From address and its domain, lowercased (ACK_LIMIT per sender,
    # ACK_DOMAIN_LIMIT per domain, whoever the acknowledgement went to).
    ack_from: str | None = Field(default=None, sa_type=sa.Text)
    ack_domain: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _time()
    # What search indexes of the subject and text: their Snowball stems (store/stems.py),
    # computed from the row when it is inserted; None here lets the column default do it.
    subject_stems: str | None = _stems("subject_stems")
    text_stems: str | None = _stems("text_stems")


sa.event.listen(Message, "before_update", restem)


class MessageRef(SQLModel, table=True):
    """Every Message-ID a stored message carries or references, mapped to its ticket."""

    __tablename__ = "message_refs"

    message_id: str = Field(sa_type=sa.Text, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)


class Participant(SQLModel, table=True):
    __tablename__ = "participants"
    # Whether an address is known to the desk (acknowledgements to another domain's Reply-To).
    __table_args__ = (sa.Index("ix_participants_address", "address"),)

    ticket_id: int = Field(foreign_key="tickets.id", primary_key=True)
    address: str = Field(sa_type=sa.Text, primary_key=True)  # lowercased
    name: str = Field(default="", sa_type=sa.Text)
    role: str = Field(default="cc", max_length=16)  # requester / cc / seen (store.MAILED_ROLES)
    first_seen: datetime = _time()


class Attachment(SQLModel, table=True):
    __tablename__ = "attachments"

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="messages.id", index=True)
    filename: str = Field(sa_type=sa.Text)
    content_type: str = Field(sa_type=sa.Text)
    size: int
    sha256: str = Field(max_length=64, index=True)
    content_id: str | None = Field(default=None, sa_type=sa.Text)
    inline: bool = False


class QuarantineEntry(SQLModel, table=True):
    __tablename__ = "quarantine"

    id: int | None = Field(default=None, primary_key=True)
    raw_id: int = Field(foreign_key="raw_messages.id", index=True)
    origin: str = Field(default="", sa_type=sa.Text)
    error: str = Field(sa_type=sa.Text)
    created_at: datetime = _time()
    retry_count: int = 0
    last_retry_at: datetime | None = _time(default=None)


class TicketEvent(SQLModel, table=True):
    """The history of a ticket: who changed what, when."""

    __tablename__ = "ticket_events"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    at: datetime = _time()
    actor: str = Field(default="system", sa_type=sa.Text)
    action: str = Field(max_length=32)
    detail: str = Field(default="", sa_type=sa.Text)


class ImapFolder(SQLModel, table=True):
    """The ledger of one IMAP folder: every UID up to `last_uid` has been taken care of."""

    __tablename__ = "imap_folders"
    __table_args__ = (sa.UniqueConstraint("account", "folder"),)

    id: int | None = Field(default=None, primary_key=True)
    account: str = Field(sa_type=sa.Text)  # user@host:port
    folder: str = Field(sa_type=sa.Text)
    uidvalidity: int = Field(sa_type=sa.BigInteger)
    last_uid: int = Field(default=0, sa_type=sa.BigInteger)
    # First run of a mailbox that holds mail: UIDs up to backlog_until are taken only when
    # they match backlog_search (e.g. UNSEEN), as IMAP_START asked.
    backlog_until: int = Field(default=0, sa_type=sa.BigInteger)
    backlog_search: str = Field(default="", sa_type=sa.Text)
    last_poll_at: datetime | None = _time(default=None)
    last_success_at: datetime | None = _time(default=None)
    waiting: int = 0  # messages on the server not yet taken, as of the last poll
    # Why the last attempt on this folder failed ("" = it did not), for `status`.
    last_error: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    last_error_at: datetime | None = _time(default=None)


class ImapPending(SQLModel, table=True):
    """Stored here, not yet flagged or moved on the server (done right after the commit)."""

    __tablename__ = "imap_pending"

    folder_id: int = Field(foreign_key="imap_folders.id", primary_key=True)
    uid: int = Field(sa_type=sa.BigInteger, primary_key=True)
    uidvalidity: int = Field(sa_type=sa.BigInteger)
    quarantined: bool = False


class ImportFile(SQLModel, table=True):
    """How far `import` got in one mbox file: written in the transaction of each batch of
    its messages, so that the next run goes on from there (mailsupport/imports.py)."""

    __tablename__ = "import_files"

    path: str = Field(sa_type=sa.Text, primary_key=True)  # absolute, symbolic links resolved
    byte_offset: int = Field(sa_type=sa.BigInteger)  # where the next message's From_ line begins
    messages: int = Field(sa_type=sa.BigInteger)  # messages before byte_offset, empty ones too
    checksum: str = Field(max_length=64)  # sources.files.checksum of the bytes before it
    updated_at: datetime = _time()


class OutboxItem(SQLModel, table=True):
    """One outgoing message waiting for, or done with, SMTP delivery.

    `data` holds the exact bytes to send, written in the same transaction as the ticket
    change that caused them, so a retry after a crash sends the same bytes and Message-ID.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        sa.Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # Each ticket's queued items, for delivery's order check (migration 0017).
        _partial_index("ix_outbox_queued_ticket_id", "status = 'queued'", "ticket_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    message_id: str = Field(sa_type=sa.Text, unique=True)  # without angle brackets
    kind: str = Field(max_length=32)  # ack / reply / closed / ...
    # Whose SMTP settings send it: the ticket's mailbox when queued ("" = the default one).
    mailbox: str = Field(default="", sa_type=sa.Text, sa_column_kwargs={"server_default": ""})
    mail_from: str = Field(sa_type=sa.Text)  # the envelope sender
    recipients: list[str] = Field(default_factory=list, sa_type=sa.JSON)  # envelope
    # Recipients the server already answered for good: address -> "sent" or the refusal.
    # A retry goes only to the others, so an accepted recipient never gets a second copy.
    recipient_status: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    data: bytes = Field(sa_type=sa.LargeBinary)
    status: str = Field(default="queued", max_length=16)  # queued / sent / failed
    attempts: int = 0
    next_attempt_at: datetime = _time()
    # A sender owns the row until then; a crashed sender's claim simply runs out.
    claimed_until: datetime | None = _time(default=None)
    claim_token: str | None = Field(default=None, max_length=32)
    last_error: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = _time()
    # When it last entered the queue (created, or `outbox retry`): SMTP_MAX_AGE counts from here.
    queued_at: datetime = _time()
    sent_at: datetime | None = _time(default=None)


class OAuthToken(SQLModel, table=True):
    """One OAuth2 account's tokens, shared by every process of the desk (mailsupport/oauth).

    `version` changes with every write, so that a process refreshes only from the row it
    read; `lease_until` lets one process at a time ask the server for a new token.
    """

    __tablename__ = "oauth_tokens"

    account: str = Field(sa_type=sa.Text, primary_key=True)  # provider:client_id:login
    login: str = Field(sa_type=sa.Text)
    provider: str = Field(max_length=16)
    flow: str = Field(max_length=32)
    access_token: str = Field(default="", sa_type=sa.Text, repr=False)
    access_expires_at: datetime | None = _time(default=None)
    refresh_token: str = Field(default="", sa_type=sa.Text, repr=False)
    version: int = 0
    lease_until: datetime | None = _time(default=None)
    created_at: datetime = _time()
    refreshed_at: datetime | None = _time(default=None)  # a token last came from the server
    signed_in_at: datetime | None = _time(default=None)  # a mail server last took a token
    # The grant is gone for good (a person must sign in again); cleared by `auth login`.
    revoked_at: datetime | None = _time(default=None)
    last_error: str = Field(default="", sa_type=sa.Text)
    last_error_at: datetime | None = _time(default=None)


class Agent(SQLModel, table=True):
    """A support agent known to the desk (`mailsupport agent add`): who they are, where
    notifications go, and which tickets are theirs to hear about (agents.py)."""

    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=sa.Text, unique=True)
    email: str = Field(sa_type=sa.Text, unique=True)  # lowercased: mail from it is theirs
    # The queues whose new tickets they hear about; empty = every queue.
    queues: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    line: int | None = None  # the support line they work; None = every line
    notify: str = Field(default="", sa_type=sa.Text)  # instant / digest:30m / off; "" = desk's
    created_at: datetime = _time()


class Notification(SQLModel, table=True):
    """One thing an agent is told about a ticket (notify.py): mailed at once (`sent_at` set
    when queued), or waiting for the agent's next digest."""

    __tablename__ = "notifications"
    __table_args__ = (sa.Index("ix_notifications_agent_sent_at", "agent", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    agent: str = Field(sa_type=sa.Text)  # the agent's name
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    kind: str = Field(max_length=16)  # new / answer / assigned / due / escalated
    message_pk: int | None = Field(default=None, foreign_key="messages.id")  # what was said
    detail: str = Field(default="", sa_type=sa.Text)
    created_at: datetime = _time()
    sent_at: datetime | None = _time(default=None)
    outbox_id: int | None = None  # the mail that told them


class AttachmentBlob(SQLModel, table=True):
    """An attachment's content kept in the database (MAILSUPPORT_ATTACHMENTS=database; see
    store/blobs.py): one row per distinct content, its bytes in `attachment_chunks`."""

    __tablename__ = "attachment_blobs"

    sha256: str = Field(max_length=64, primary_key=True)
    size: int
    chunks: int  # how many chunk rows hold it: a reader can tell it got them all


class AttachmentChunk(SQLModel, table=True):
    """One piece of an AttachmentBlob, in order: written and read a piece at a time, so a
    large attachment is never held whole by a query or its result."""

    __tablename__ = "attachment_chunks"

    sha256: str = Field(max_length=64, foreign_key="attachment_blobs.sha256", primary_key=True)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_type=sa.LargeBinary)
