"""From raw bytes to a stored ticket message (or the quarantine), one readable list of steps."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TypeVar

from sqlalchemy import exc
from sqlmodel import Session

from mailsupport import heap, joining
from mailsupport.acks import Acknowledger
from mailsupport.agentmail import AgentMail, FileOriginal
from mailsupport.agents import Roster
from mailsupport.automated import is_automated, is_bounce
from mailsupport.batching import (
    BATCH_BYTES,
    NeedsSavepoint,
    file_batch,
    set_aside_when_careful,
)
from mailsupport.config import Settings
from mailsupport.errors import TemporaryError
from mailsupport.mail import Inbound
from mailsupport.mailboxes import Mailboxes, load_mailboxes
from mailsupport.notify import ANSWER as NOTIFY_ANSWER
from mailsupport.notify import NEW as NOTIFY_NEW
from mailsupport.notify import Notifier
from mailsupport.parsing.workers import Parsed, ParseFailure, ParserPool, parse_safely
from mailsupport.placing import thread
from mailsupport.practice import Dropped, Practice
from mailsupport.signing import is_our_message_id
from mailsupport.store import claims, window
from mailsupport.store import tickets as db
from mailsupport.store.attachments import attachment_store, parse_files
from mailsupport.store.bounces import find_bounced, record_bounce
from mailsupport.store.db import Store, translate_db_error
from mailsupport.store.models import Ticket
from mailsupport.threads import NO_SUBJECT, ThreadDecision, normalize_subject, reference_ids
from mailsupport.topicterms import dated, ticket_terms

log = logging.getLogger(__name__)

Pool = TypeVar("Pool", bound=ParserPool)

NEW, REPLY, DUPLICATE, QUARANTINED = "new", "reply", "duplicate", "quarantined"
# Why mail from our own address is a stranger's (in its thread reason).
UNPROVEN_OURS = "our own address, without our signed Message-ID"


def parser_pool(settings: Settings, kind: type[Pool]) -> Pool:
    """The parse workers `settings` ask for (a ParserPool or a SharedParserPool), storing
    each parse's attachments where the desk keeps new ones as files (parse_files)."""
    return kind(settings.parse_workers_or_default, settings.parse_timeout, parse_files(settings))


def describe(counts: Counter[str]) -> str:
    """The one-line summary that import, poll and retry end with."""
    return (
        f"read {sum(counts.values())}, new tickets {counts[NEW]}, "
        f"threaded replies {counts[REPLY]}, duplicates {counts[DUPLICATE]}, "
        f"quarantined {counts[QUARANTINED]}"
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # NEW, REPLY, DUPLICATE or QUARANTINED
    ticket_number: int | None = None
    message_id: str | None = None
    detail: str = ""
    ack: str = ""  # the acknowledgement decision, for incoming mail


@dataclass(frozen=True, slots=True)
class Incoming:
    """One message as a source hands it over."""

    raw: bytes
    origin: str
    received_at: datetime | None = None  # when the source got it, if it knows
    # Why this source must not acknowledge new tickets ("" = it may): an imported archive,
    # the backlog a first IMAP poll takes. Recorded as the message's acknowledgement decision.
    no_ack_reason: str = ""
    # False for imported history: its tickets get no SLA due times (they are not work now).
    live: bool = True
    # True for files the operator imports as our own sent mail (`import --sent`): mail in
    # them from our addresses is ours. Anywhere else only our signed Message-ID proves it.
    sent: bool = False
    # The mailbox it was delivered to, when the source knows (`ingest --mailbox`); "" = by
    # the address it was sent to (Mailboxes.place).
    mailbox: str = ""
    # The agent who forwarded it into the desk (agentmail.py): not told of it.
    forwarded_by: str = ""


class Pipeline:
    """Raw bytes to stored messages for one mailbox (`settings` are the mailbox's: see
    mailboxes.py). `mailboxes`, the desk's, decide which mailbox a new ticket belongs to;
    `parsers`, when given, are shared with other pipelines (one daemon, many mailboxes) and
    are not closed by this one."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        mailboxes: Mailboxes | None = None,
        parsers: ParserPool | None = None,
    ) -> None:
        self.store = store
        self.mailboxes = mailboxes or load_mailboxes(settings)
        # The mailbox this pipeline's mail comes in through, unless its address says otherwise;
        # its settings know every address of the desk as ours.
        self.home = self.mailboxes.for_address(settings.support_address) or self.mailboxes.default
        self.settings = settings = self.home.settings
        self.files = attachment_store(settings)
        self.acks = Acknowledger(settings)
        roster = Roster()  # the registered agents, read again every few seconds
        self.notifier = Notifier(self.acks.outgoing, roster)
        self.agent_mail = AgentMail(self.notifier, roster)
        self.practice = Practice(settings)
        # Batches filed without a savepoint per message (take()); False: always with one,
        # the path a batch falls back to (tests compare the two).
        self.batched = True
        self._own_parsers = parsers is None
        self.parsers = parsers or parser_pool(settings, ParserPool)

    def close(self) -> None:
        """Stop the parser processes (they also stop when the pipeline is dropped), unless
        they are shared."""
        if self._own_parsers:
            self.parsers.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """Raise ConfigError for what would fail on every message: broken templates (when
        acknowledging) or a broken rules file. Run before taking any mail."""
        self.acks.check()
        self.practice.check()

    # -- driving ------------------------------------------------------------------------------

    def run(
        self,
        items: Iterable[Incoming],
        now: Callable[[], datetime],
        batch_size: int = 200,
        on_each: Callable[[Outcome], None] | None = None,
        on_batch: Callable[[Session, Incoming], None] | None = None,
    ) -> Counter[str]:
        """Process every item, committing every `batch_size` messages, or sooner when their
        bytes reach BATCH_BYTES (batching.py). Returns counts by kind. `on_batch` gets each
        batch's last item in its transaction (where a source got to).

        A TemporaryError stops the run; what was committed before it stays, the rest can be
        fed again (duplicates are recognised)."""
        totals: Counter[str] = Counter()
        iterator = iter(self.parse_all(items))
        more = True
        while more:
            outcomes, more = self._run_batch(iterator, batch_size, now, on_batch)
            heap.give_back()  # what the batch held is free now
            totals.update(outcome.kind for outcome in outcomes)
            if on_each is not None:
                for outcome in outcomes:
                    on_each(outcome)
        return totals

    def _run_batch(
        self,
        parsed: Iterator[tuple[Incoming, Parsed | None]],
        size: int,
        now: Callable[[], datetime],
        on_batch: Callable[[Session, Incoming], None] | None,
    ) -> tuple[list[Outcome], bool]:
        """take() the next `size` messages of run()'s, or fewer whose bytes reach
        BATCH_BYTES; and whether there may be more."""
        last: Incoming | None = None  # the batch's last item (the batch itself is take()'s)
        cut = False  # the batch was ended by a limit, not by the end of the messages

        def batch() -> Iterator[tuple[Incoming, Parsed | None]]:
            nonlocal last, cut
            count = held = 0
            for item, parse in parsed:
                last = item
                yield item, parse
                count, held = count + 1, held + len(item.raw)
                if count >= size or held >= BATCH_BYTES:
                    cut = True
                    return

        def finish(session: Session, outcomes: list[Outcome]) -> None:
            if on_batch is not None and last is not None:
                on_batch(session, last)

        outcomes = self.take(batch(), now, finish)
        return outcomes, cut

    def take(
        self,
        messages: Iterator[tuple[Incoming, Parsed | None]],
        now: Callable[[], datetime],
        finish: Callable[[Session, list[Outcome]], None],
    ) -> list[Outcome]:
        """File `messages` (each with its parse) in one transaction, in which `finish` then
        records what the source needs to (where it got to). Returns their outcomes in order.

        Batched: no message gets a savepoint of its own (two statements each, and on
        PostgreSQL two round trips). When one needs it after all (it cannot be stored, a
        rule drops it: what its savepoint would have taken back), the transaction is rolled
        back and the same messages are filed again one at a time, each in a savepoint, as
        `self.batched = False` does from the start: the outcome is the same either way.
        Filed again from the start when another poller's transaction was in the way
        (batching.py)."""
        return file_batch(
            self.store,
            messages,
            lambda session, pair, careful: self.process(
                session, pair[0], now(), pair[1], careful=careful
            ),
            finish,
            careful=not self.batched,
            # The window's reads save waits on PostgreSQL; on SQLite a read waits for
            # nothing, and they cost filing a tenth of its instructions (callgrind).
            read_ahead=(
                (lambda session, pairs: self.read_ahead(session, pairs, now()))
                if self.store.engine.dialect.name == "postgresql"
                else None
            ),
        )

    def ingest(self, item: Incoming, now: datetime) -> Outcome:
        """One message in its own transaction (MTA pipe delivery)."""
        parsed = self.parse_one(item)
        [outcome] = file_batch(
            self.store,
            iter([(item, parsed)]),
            lambda session, pair, careful: self.process(
                session, pair[0], now, pair[1], careful=careful
            ),
            lambda session, outcomes: None,
            careful=True,
        )
        return outcome

    def parse_one(self, item: Incoming) -> Parsed | None:
        """parse_all() for one message: parsed by a worker, within the time limit."""
        [(_, parsed)] = self.parse_all([item])
        return parsed

    def parse_all(
        self, items: Iterable[Incoming]
    ) -> Generator[tuple[Incoming, Parsed | None], None, None]:
        """Each item with its parse, in order, parsed ahead by the worker processes within
        the time limit. Messages over the size limit are not parsed (None)."""
        limit = self.settings.max_message_bytes
        return self.parsers.parse_all(
            items, lambda item: item.raw if len(item.raw) <= limit else None
        )

    def read_ahead(
        self, session: Session, pairs: list[tuple[Incoming, Parsed | None]], now: datetime
    ) -> None:
        """Ask the store at once for what process() will read of these messages
        (store/window.py): their bytes, thread facts, and acknowledgement counts."""
        acks = self.acks.off_reason() is None
        wanted = [
            window.Wanted(
                tuple(dict.fromkeys([message.message_id, *reference_ids(message)])),
                message.from_.address if message.from_ else "",
                self.acks.counted(message) if acks and not item.no_ack_reason else None,
            )
            for item, message in pairs
            if isinstance(message, Inbound)  # (not parsed: filed without these reads)
        ]
        digests = [db.digest_of(item.raw) for item, _ in pairs]
        window.read_ahead(session, wanted, digests, self.acks.since(now))

    # -- the steps ----------------------------------------------------------------------------

    def process(
        self,
        session: Session,
        item: Incoming,
        now: datetime,
        parsed: Parsed | None = None,
        *,
        careful: bool = True,
    ) -> Outcome:
        """One message, in the caller's transaction. `parsed` is its parse from parse_all();
        without it the message is parsed here, in this process. Careful: filed in a
        savepoint, which takes back what it did when it fails; not careful (take()'s batched
        attempt): without one, and NeedsSavepoint is raised where the savepoint would have
        been needed."""
        stored = db.save_raw(session, item.raw, item.origin, now)  # 1. keep the bytes
        limit = self.settings.max_message_bytes
        if len(item.raw) > limit:  # 2. too large to process, never truncated
            return self._set_aside(
                session, stored()[0], item.origin,
                f"message is {len(item.raw)} bytes, over MAILSUPPORT_MAX_MESSAGE_BYTES ({limit})",
                now,
            )  # fmt: skip
        message = parse_safely(item.raw) if parsed is None else parsed  # 3. parse
        if isinstance(message, ParseFailure):
            if message.trace:
                log.error("cannot parse %s\n%s", item.origin, message.trace.rstrip())
            return self._set_aside(session, stored()[0], item.origin, message.detail, now)
        sender = message.from_  # 4. seen before: stored once (its own Message-ID indexed)
        ids = [message.message_id, *reference_ids(message)]
        facts = db.thread_facts(session, ids, sender.address if sender else "")
        raw, fresh = stored()  # its answer came with the read's (PostgreSQL)
        if message.message_id in facts.known and db.message_exists(session, message.message_id):
            if not fresh:
                db.release_quarantine(session, raw)
            log.info("duplicate <%s> skipped", message.message_id)
            return Outcome(DUPLICATE, message_id=message.message_id)
        created, mark = db.created_tickets(session), window.mark(session)
        try:  # 5. thread and store; a failure here must not block the messages behind it
            if careful:
                with session.begin_nested():
                    outcome = self._file(session, message, raw, item, now, facts)
            else:
                outcome = self._file(session, message, raw, item, now, facts)
                session.flush()  # what the end of its savepoint would write
        except Exception as error:
            if not careful and set_aside_when_careful(error):
                raise NeedsSavepoint(f"<{message.message_id}>: {error!r}") from None
            db.forget_created(session, created)  # the savepoint took them back
            window.rolled_back(session, mark)
            db.expire_written(session)
            return self._failed(session, message, raw, item, error, now)
        db.forget_written(session)
        if not fresh:  # stored after all: out of the quarantine
            db.release_quarantine(session, raw)
        log.info(
            "ticket #%s <%s> %s: %s%s",
            outcome.ticket_number, outcome.message_id, outcome.kind, outcome.detail,
            f"; {outcome.ack}" if outcome.ack else "",
        )  # fmt: skip
        return outcome

    def _failed(
        self,
        session: Session,
        message: Inbound,
        raw: db.StoredRaw,
        item: Incoming,
        error: Exception,
        now: datetime,
    ) -> Outcome:
        """A message whose filing failed, its savepoint rolled back: what a rule dropped, a
        value the database refuses for good, or a bug on odd input is set aside and the batch
        goes on; temporary trouble (the database, the disk, one we name) stops the batch, to
        be retried later."""
        if not set_aside_when_careful(error):
            raise error
        if isinstance(error, Dropped):
            return self._set_aside(session, raw, item.origin, str(error), now)
        if isinstance(error, exc.IntegrityError):
            # Another process stored this message (or indexed its references) at the same time.
            if db.message_exists(session, message.message_id):
                return Outcome(DUPLICATE, message_id=message.message_id)
            raise TemporaryError(
                f"conflict while storing <{message.message_id}>; try again"
            ) from None
        if isinstance(error, exc.DBAPIError):
            refused = translate_db_error(error)
            # The database refuses this message's data for good (a limit, a value it cannot
            # hold): set it aside like any message we cannot take, and go on.
            log.error("cannot store <%s>: %s", message.message_id, refused)
            return self._set_aside(
                session, raw, item.origin, f"the database refused it: {refused}", now
            )
        log.error("cannot store <%s>", message.message_id, exc_info=error)
        return self._set_aside(
            session, raw, item.origin, f"internal error: {type(error).__name__}: {error}", now
        )

    def _set_aside(
        self, session: Session, raw: db.StoredRaw, origin: str, error: str, now: datetime
    ) -> Outcome:
        entry = db.quarantine(session, raw, origin, error, now)
        log.warning("quarantined %s as entry %s: %s", origin or "message", entry.id, error)
        return Outcome(QUARANTINED, detail=error)

    def _file(
        self,
        session: Session,
        message: Inbound,
        raw: db.StoredRaw,
        item: Incoming,
        now: datetime,
        facts: db.ThreadFacts | None = None,
    ) -> Outcome:
        """File one parsed message. `facts`: thread_facts() of its Message-IDs, when the
        caller looked them up already (with its sender's address)."""
        settings = self.settings
        sender = message.from_
        outgoing, doubt = self._who(message, item)
        if not (outgoing or doubt or item.sent):  # an agent's answer or forward?
            filer = self._original_filer(raw, item, now)
            taken = self.agent_mail.take(session, message, now, filer, raw.id)
            if taken is not None:
                return Outcome(taken.kind, taken.ticket_number, message.message_id, taken.detail)
        at = min(item.received_at or message.date or now, now)
        references = reference_ids(message)

        bounce = not outgoing and is_bounce(message)
        bounced = find_bounced(session, message) if bounce else None
        if bounced is not None:  # a report on our own mail joins that mail's ticket
            claims.outbox_item(session, bounced.item)  # several pollers: store/claims.py
            ours = db.follow_merges(session, claims.ticket(session, bounced.item.ticket_id))
            decision = ThreadDecision(ours.id if ours else None, (), bounced.reason)
        else:
            decision = thread(
                session, message, references, self.settings, self._signed_by_us,
                outgoing=outgoing, trusted=not doubt, facts=facts,
            )  # fmt: skip
        if doubt:  # said wherever the decision shows: the ticket's history, `show`
            decision = replace(decision, reason=f"{decision.reason}; a stranger: {doubt}")

        title = normalize_subject(message.subject, settings.tag_pattern) or NO_SUBJECT
        customer = None if doubt else joining.customer_of(message, outgoing, settings.our_addresses)
        joined = window.ticket(session, decision.ticket_id)  # locked: another poller's waits
        days = 0 if decision.merge_ids or outgoing else settings.reopen_days
        old = joining.closed_long_ago(joined, message, days, now)
        if old is not None:  # a new conversation about an old, long closed one
            ticket = db.create_ticket(
                session, title, customer, at, _terms(title, message, at, outgoing)
            )
            self._place(ticket, message, item, outgoing)
            ticket.follows_id = old.id
            reason = f"follows #{old.number}, closed over {self.settings.reopen_days} days ago"
            decision = ThreadDecision(None, (), f"new ticket ({reason})")
            db.record_event(session, ticket.id, "created", decision.reason, now)  # type: ignore[arg-type]
            db.record_event(session, old.id, "followed", f"continued in #{ticket.number}", now)  # type: ignore[arg-type]
            kind = NEW
        elif decision.ticket_id is None:
            ticket = db.create_ticket(
                session, title, customer, at, _terms(title, message, at, outgoing)
            )
            self._place(ticket, message, item, outgoing)
            db.record_event(session, ticket.id, "created", decision.reason, now)  # type: ignore[arg-type]
            if decision.follows_id is not None:  # it refers to a ticket it may not join
                joining.follow(session, ticket, decision, now)
            kind = NEW
        else:
            ticket = joined  # type: ignore[assignment]
            if decision.merge_ids:  # rare, and it moves much: with no other writer about
                claims.everything(session)
                decision = joining.merge_same_customer(
                    session, ticket, decision, now, settings.stranger_replies
                )
            created = ticket.created_at
            joining.join(session, ticket, message, title, customer, at, outgoing, now)
            if ticket.created_at != created and ticket.resolution_due is not None:
                self.practice.set_due_times(ticket)  # an earlier message arrived late
            kind = REPLY

        assert ticket.id is not None
        spam = ""
        if kind == NEW and not outgoing:  # classify, then due times follow the priority
            spam = self.practice.set_aside_spam(session, ticket, message, now)
            self.practice.mark_automatic(session, ticket, message, now)
            classified = self.practice.classify_new(session, ticket, message, now)
            spam = spam or self.practice.handle(session, ticket, classified, now)
            if item.live and not ticket.automatic and ticket.status == "new":  # no work else
                self.practice.set_due_times(ticket)
        values = {
            "ticket_id": ticket.id,
            "message_id": message.message_id,
            "direction": "out" if outgoing else "in",
            "in_reply_to": " ".join(message.in_reply_to),
            "refs": " ".join(message.references),
            "from_address": sender.address if sender else "",
            "from_name": sender.name if sender else "",
            "to": [a.as_json() for a in message.to],
            "cc": [a.as_json() for a in message.cc],
            "subject": message.subject,
            "date": message.date,
            "received_at": at,
            "text": message.text,
            "html": message.html,
            "raw_id": raw.id,
            "thread_reason": decision.reason,
            "defects": "\n".join(message.defects),
            "created_at": now,
        }
        if message.stems is not None:  # the parse worker's (else the column defaults')
            values["subject_stems"], values["text_stems"] = message.stems
        acked = None
        if not outgoing:  # decided now, so that the message's row goes in with the decision
            no_ack = item.no_ack_reason or spam
            no_ack = no_ack or (f"the sender is not clear: {doubt}" if doubt else "")
            acked = self.acks.prepare(
                session, message, ticket, new_ticket=kind == NEW, source_reason=no_ack, now=now
            )
            result = acked.outcome
            values["ack_decision"], values["ack_to"] = result.decision, result.to
            values["ack_from"], values["ack_domain"] = result.sender, result.domain
        ids = [message.message_id, *references]
        message_pk = db.store_message(
            session, values, message.attachments, self.files, ids, counts=not bounce,
            ticket=ticket, unseen=[i for i in ids if i not in facts.known] if facts else None,
        )  # fmt: skip
        if not bounce:  # MAILER-DAEMON is nobody to write to
            people = joining.people_of(
                message,
                ticket,
                kind == NEW,
                outgoing,
                trusted=not doubt,
                ours=settings.our_addresses,
            )
            limit = settings.max_participants
            db.add_participants(session, ticket, people[:limit], now)
            if len(people) > limit:
                left = f"{len(people) - limit} more addresses of <{message.message_id}> not added"
                detail = f"{left}: over MAILSUPPORT_MAX_PARTICIPANTS ({limit})"
                db.record_event(session, ticket.id, "participants", detail, now)
        if bounced is not None:
            record_bounce(session, bounced, now)
        ack = ""
        if acked is not None:
            self.acks.send_prepared(session, ticket, acked)  # stored after the customer's
            ack = acked.outcome.decision
            backlog = bool(item.no_ack_reason) and not item.forwarded_by
            people = item.live and not backlog and self.notifier.agents(session)
            if people and not is_automated(message):  # news of a person's mail, for someone
                self.notifier.tell(
                    session, ticket, NOTIFY_NEW if kind == NEW else NOTIFY_ANSWER,
                    now=now, message_pk=message_pk.get(), by=item.forwarded_by,
                )  # fmt: skip
        db.write_changes(session, ticket)  # now, by a statement: not at the ORM's flush
        return Outcome(kind, ticket.number, message.message_id, decision.reason, ack)

    def _original_filer(self, raw: db.StoredRaw, item: Incoming, now: datetime) -> FileOriginal:
        """How agentmail files the message an agent forwarded: as its sender's own mail,
        dated when it was written, acknowledged only when the agent asked."""

        def file_original(
            session: Session, original: Inbound, no_ack: str, by: str
        ) -> tuple[str, int | None]:
            inner = replace(
                item, no_ack_reason=no_ack or item.no_ack_reason, forwarded_by=by,
                received_at=original.date or item.received_at,
            )  # fmt: skip
            outcome = self._file(session, original, raw, inner, now)
            return outcome.kind, outcome.ticket_number

        return file_original

    def _place(self, ticket: Ticket, message: Inbound, item: Incoming, outgoing: bool) -> None:
        """A new ticket's mailbox, and the mailbox's queue (a rule may set another)."""
        box = self.mailboxes.place(message, item.mailbox, self.home, outgoing)
        ticket.mailbox = box.name
        ticket.queue = ticket.queue or box.queue

    def _who(self, message: Inbound, item: Incoming) -> tuple[bool, str]:
        """Whether the message is our own mail, and why its sender is a stranger ("" when
        not). Ours only when it proves it: our signed Message-ID, or our address in files
        imported as our sent mail. A From of our address alone proves nothing: anyone can
        write it, and many servers do not check it for their own domain."""
        sender = message.from_
        if message.sender_doubt:
            return False, message.sender_doubt
        if sender is None or sender.key not in self.settings.our_addresses:
            return False, ""
        if item.sent or self._signed_by_us(message.message_id):
            return True, ""
        return False, f"From {sender.address}, {UNPROVEN_OURS}"

    def _signed_by_us(self, message_id: str) -> bool:
        """Whether `message_id` is one of ours, by the HMAC token only we can make, at the
        domain of any of the desk's addresses (each mailbox signs with its own)."""
        domains = {address.rpartition("@")[2] for address in self.settings.our_addresses}
        if not domains:
            return False  # without an address we never sent any mail
        key = self.acks.outgoing.key()
        return any(is_our_message_id(message_id, key, domain) for domain in domains)


def _terms(title: str, message: Inbound, at: datetime, outgoing: bool) -> str | None:
    """What the report counts of a new ticket: the words of its first incoming message."""
    if outgoing:
        return None
    if message.title_terms is not None and message.title_terms[0] == title:  # worked out
        return dated(message.title_terms[1], at)
    return ticket_terms(title, message.text, at, message.text_terms)
