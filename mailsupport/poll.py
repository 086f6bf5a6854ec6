"""Polling the support mailbox: one exactly-once pass over its IMAP folder.

The driver between the IMAP source (sources/imap.py), the folder's ledger (store/ledger.py)
and the pipeline. Exactly once: a message is stored, and its UID recorded in the ledger, in
one database transaction; only after that commit is it flagged \\Seen (or moved) on the
server. A crash before the commit leaves the message to be fetched again; a crash after it
leaves a pending row, and the next pass flags the message without storing it again.

Mail that was in the folder before the first poll is history: what IMAP_START takes of it,
and what `poll --all` or `--since` takes over later, is filed like `import` files it: dated
by its own Date, with no due times and no acknowledgement.

`poll` and the daemon make their passes with FolderPoller; `poll_once` is the whole of
`mailsupport poll`'s intake for one mailbox (lock, connect, one pass, disconnect), and
`poll_mailboxes` runs it for several at once.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from sqlmodel import Session

from mailsupport import heap
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, MailSupportError
from mailsupport.imapconn import connect, disconnect, server_errors
from mailsupport.locks import exclusive, folder_lock
from mailsupport.logs import in_mailbox
from mailsupport.mailboxes import Mailbox, Mailboxes
from mailsupport.parsing.workers import Parsed, ParserPool, SharedParserPool
from mailsupport.pipeline import QUARANTINED, Incoming, Outcome, Pipeline, parser_pool
from mailsupport.sources.imap import Fetched, ImapFolderSource
from mailsupport.sources.uids import history_search, start_from, widest
from mailsupport.store import ledger as ledgers
from mailsupport.store.db import Store
from mailsupport.store.models import ImapFolder

log = logging.getLogger(__name__)

# Mail that sat in the folder before polling started (IMAP_START unseen, all, since:, or
# taken over later) may have been answered by hand already: it is filed, not acknowledged.
BACKLOG_NO_ACK = "it was in the mailbox before mailsupport started reading it (IMAP_START)"


@dataclass
class PollResult:
    folder: str
    counts: Counter[str] = field(default_factory=Counter)
    waiting: int = 0  # left on the server for the next pass (only when stopped early)
    uidvalidity_changed: bool = False
    flag_error: str = ""  # the server refused to flag or move taken mail (retried next pass)
    # The first pass: how many older messages it left on the server (None on later passes).
    history_left: int | None = None
    # `poll --all` / `--since`: what the takeover of the older mail took (None: not asked).
    history: Counter[str] | None = None


class FolderPoller:
    """One pass over one folder. The caller holds the folder lock and the connection."""

    def __init__(self, settings: Settings, pipeline: Pipeline, client: IMAPClient) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = pipeline.store
        self.source = ImapFolderSource(settings, client)
        self.folder = self.source.folder

    def poll(
        self,
        now: Callable[[], datetime],
        should_stop: Callable[[], bool] = lambda: False,
        on_each: Callable[[Outcome], None] | None = None,
        history: str = "",
    ) -> PollResult:
        """One pass; then, when `history` is "ALL" or "since:YYYY-MM-DD", the takeover of
        the older mail the first pass left that it asks for."""
        with server_errors(self.settings):
            return self._poll(now, should_stop, on_each, history)

    def _poll(
        self,
        now: Callable[[], datetime],
        should_stop: Callable[[], bool],
        on_each: Callable[[Outcome], None] | None,
        history: str,
    ) -> PollResult:
        result = PollResult(self.folder)
        uidvalidity, uidnext = self.source.open()
        start = self.settings.imap_start
        ledger, created, result.uidvalidity_changed = ledgers.open_ledger(
            self.store,
            self.settings.imap_account,
            self.folder,
            uidvalidity,
            start_from(start, uidnext),
            start_from("unseen", uidnext),
            start,
        )
        if created or result.uidvalidity_changed:  # counted before the backlog is flagged
            left = history_search(ledger.backlog_until, ledger.backlog_search, "ALL")
            result.history_left = len(self.source.search(left)) if left else 0
            if result.history_left:
                log.info(
                    "%s: %s older messages left on the server", self.folder, result.history_left
                )
        self._flag_pending(ledger, result)

        todo = self.source.find(ledger.last_uid, ledger.backlog_until, ledger.backlog_search)
        for batch in self.source.batches(todo):
            if should_stop():
                break
            self._take(ledger, batch, now, result.counts, on_each, should_stop)
            heap.give_back()  # what the batch held is free now
            self._flag_pending(ledger, result)
        result.waiting = len([u for u in todo if u > ledger.last_uid])
        if history and not result.waiting:
            self._take_history(ledger, history, now, result, on_each)
        ledgers.finish_pass(self.store, ledger, now(), result.waiting, result.flag_error)
        return result

    def _take_history(
        self,
        ledger: ImapFolder,
        wanted: str,
        now: Callable[[], datetime],
        result: PollResult,
        on_each: Callable[[Outcome], None] | None,
    ) -> None:
        """Take the older mail `wanted` asks for that the ledger has not taken, once: the
        ledger records what was taken with the last batch. A crash before that leaves the
        rest to the next `poll --all`; what was stored then is a duplicate by Message-ID."""
        criteria = history_search(ledger.backlog_until, ledger.backlog_search, wanted)
        uids = sorted(self.source.search(criteria)) if criteria else []
        result.history = Counter()
        batches = list(self.source.batches(uids)) or [[]]  # an empty one records it too
        for number, batch in enumerate(batches, 1):
            taken = widest(ledger.backlog_search, wanted) if number == len(batches) else ""
            self._take(ledger, batch, now, result.history, on_each, history=taken)
            self._flag_pending(ledger, result)

    def _take(
        self,
        ledger: ImapFolder,
        uids: list[int],
        now: Callable[[], datetime],
        counts: Counter[str],
        on_each: Callable[[Outcome], None] | None,
        should_stop: Callable[[], bool] = lambda: False,
        history: str = "",
    ) -> None:
        """Store the messages `uids`, in one transaction with the ledger's record of them.
        `history`: this batch ends a takeover of the older mail, which is recorded with it."""
        fetched: deque[tuple[int, Incoming | None]] = deque()  # each until it is filed
        unparsed: deque[Incoming] = deque()  # fetched, not handed to the parse workers yet
        chunks = iter(self.source.fetch(uids) if uids else ())  # FETCH a chunk at a time

        def fetch_one() -> bool:
            pair = next(chunks, None)
            if pair is None:
                return False
            fetched.append((pair[0], item := self._incoming(ledger, pair[1])))
            if item is not None:
                unparsed.append(item)
            return True

        def incoming() -> Iterator[Incoming]:
            while unparsed or fetch_one():
                if unparsed:
                    yield unparsed.popleft()

        # The worker processes parse ahead while this one stores. Their first messages are
        # handed over as soon as a chunk of them comes, and the rest of the batch is fetched
        # while they parse: all of it before the transaction (a slow server must not hold
        # the database), where one FETCH of the whole batch left them idle until it ended.
        parsed = self.pipeline.parse_all(incoming())
        taken = 0  # the highest UID dealt with; a stop leaves the rest for the next pass
        filed: list[int] = []  # the UIDs of the messages handed to the pipeline, in order

        def messages(
            parses: Iterator[tuple[Incoming, Parsed | None]],
        ) -> Iterator[tuple[Incoming, Parsed | None]]:
            nonlocal taken
            while not should_stop():  # finish those in hand (PostgreSQL: a READ_AHEAD window)
                pair = next(parses, None)
                while fetched and fetched[0][1] is None:  # gone before it was fetched
                    taken = fetched.popleft()[0]
                if pair is None:
                    return
                taken = fetched.popleft()[0]  # the message `pair` is the parse of
                filed.append(taken)
                yield pair

        def finish(session: Session, outcomes: list[Outcome]) -> None:
            done = [(uid, o.kind == QUARANTINED) for uid, o in zip(filed, outcomes, strict=True)]
            ledgers.record_taken(session, ledger, done)
            ledgers.advance(session, ledger, taken)
            if history:
                ledgers.record_history(session, ledger, history)

        with contextlib.closing(parsed):
            first = next(parsed, None)  # the first messages handed over, the first parsed
            while fetch_one():  # the rest of the batch, while the workers parse
                pass
            parses = itertools.chain([first] if first is not None else [], parsed)
            outcomes = self.pipeline.take(messages(parses), now, finish)
        ledger.last_uid = max(ledger.last_uid, taken)  # committed
        if history:
            ledger.backlog_search = history
            ledger.last_uid = max(ledger.last_uid, ledger.backlog_until)
        counts.update(o.kind for o in outcomes)
        if on_each is not None:
            for outcome in outcomes:
                on_each(outcome)

    def _incoming(self, ledger: ImapFolder, message: Fetched | None) -> Incoming | None:
        """The message as the pipeline takes it; None when it is gone."""
        if message is None:
            return None
        origin = self.source.origin(message.uid)
        if message.uid > ledger.backlog_until:
            return Incoming(message.raw, origin, message.internal_date)
        # History, as `import` files it: its own date, no due times, no acknowledgement.
        return Incoming(
            message.raw, origin, message.written_at(), no_ack_reason=BACKLOG_NO_ACK, live=False
        )

    def _flag_pending(self, ledger: ImapFolder, result: PollResult) -> None:
        """Flag or move what was stored. A refusal (bad folder name, quota) is reported but
        never stops new mail from being taken; the flags are tried again on the next pass."""
        pending = ledgers.pending(self.store, ledger)
        if not pending:
            return
        s = self.settings
        try:
            done = [p.uid for p in pending if not p.quarantined]
            self.source.mark(done, s.imap_processed_folder, "MAILSUPPORT_IMAP_PROCESSED_FOLDER")
            bad = [p.uid for p in pending if p.quarantined]
            self.source.mark(bad, s.imap_quarantine_folder, "MAILSUPPORT_IMAP_QUARANTINE_FOLDER")
        except ConfigError as error:
            log.error("%s", error)
            result.flag_error = str(error)
            return
        ledgers.forget_pending(self.store, ledger, [p.uid for p in pending])


def poll_once(
    settings: Settings,
    store: Store,
    now: Callable[[], datetime],
    *,
    mailboxes: Mailboxes | None = None,
    parsers: ParserPool | None = None,
    **options: Any,
) -> PollResult | None:
    """One pass over the folder under its lock, on a connection of its own: what
    `mailsupport poll` does for each mailbox before sending the outbox. None when another
    poller holds the folder. A failure is recorded as the folder's last error (a success
    clears it). `mailboxes` and `parsers` go to the Pipeline, `options` to
    FolderPoller.poll."""
    with Pipeline(settings, store, mailboxes=mailboxes, parsers=parsers) as pipeline:
        try:
            pipeline.check()  # a broken template or rules file stops us before any mail
            with exclusive(store, *folder_lock(settings)) as held:
                if not held:
                    return None
                client = connect(settings)
                try:
                    return FolderPoller(settings, pipeline, client).poll(now, **options)
                finally:
                    disconnect(client)
        except MailSupportError as error:
            record_failure(store, settings, error, now())
            raise


def record_failure(store: Store, settings: Settings, error: Exception, at: datetime) -> None:
    """Keep `error` as the folder's last error, for `status`; when the database is what
    failed, it cannot be kept, and the error says enough where it is reported."""
    if not settings.imap_host:
        return  # no folder to speak of
    try:
        ledgers.record_error(store, settings.imap_account, settings.imap_folder, str(error), at)
    except MailSupportError as other:
        log.debug("could not record the error of %s: %s", settings.imap_account, other)


def polled_mailboxes(mailboxes: Mailboxes) -> tuple[list[Mailbox], dict[str, str]]:
    """The mailboxes `poll` and the daemon work on, one per folder: those with an IMAP
    server, the first of each account and folder (the pipeline files each message under
    the mailbox it was sent to); and the names of those left out for sharing a folder with
    an earlier one (name -> that one's name). Without a mailboxes file, the one mailbox,
    set up or not: taking mail from it says what is missing, as it always did."""
    if not mailboxes.default.settings.mailboxes_file:
        return [mailboxes.default], {}
    chosen: dict[str, Mailbox] = {}
    same: dict[str, str] = {}
    for box in mailboxes.all:
        if not box.polled:
            continue
        name, _ = folder_lock(box.settings)
        if name in chosen:
            same[box.name] = chosen[name].name
        else:
            chosen[name] = box
    return list(chosen.values()), same


@dataclass
class MailboxPoll:
    """What `poll` did for one mailbox: its result (None when another poller held the
    folder, or after an error), or the error."""

    mailbox: Mailbox
    result: PollResult | None = None
    error: MailSupportError | None = None


# At most this many mailboxes are polled at the same time (each on a connection of its own).
POLL_PARALLEL = 8


def poll_mailboxes(
    boxes: Sequence[Mailbox],
    store: Store,
    now: Callable[[], datetime],
    *,
    mailboxes: Mailboxes | None = None,
    parallel: int = POLL_PARALLEL,
    **options: Any,
) -> list[MailboxPoll]:
    """poll_once for each of `boxes`, `parallel` at a time, with one pool of parse workers
    between them: a mailbox whose server is down or whose sign-in fails holds up no other,
    and its error is in its MailboxPoll. In the order given."""
    if not boxes:
        return []
    first = boxes[0].settings
    with parser_pool(first, SharedParserPool) as parsers:
        if len(boxes) > 1:
            parsers.start()  # before the threads (see SharedParserPool)

        def one(box: Mailbox) -> MailboxPoll:
            with in_mailbox(box.name if box.settings.mailboxes_file else ""):
                try:
                    found = poll_once(
                        box.settings, store, now, mailboxes=mailboxes, parsers=parsers, **options
                    )
                except MailSupportError as error:
                    return MailboxPoll(box, error=error)
                return MailboxPoll(box, result=found)

        if len(boxes) == 1:
            return [one(boxes[0])]
        with ThreadPoolExecutor(min(parallel, len(boxes)), "poll") as pool:
            return list(pool.map(one, boxes))


def worst_exit_code(errors: Sequence[MailSupportError]) -> int:
    """The exit code that tells most of several failures: a configuration error (2) needs
    a person, a temporary one (75) passes, anything else is 1; 0 when there are none."""
    codes = {error.exit_code for error in errors}
    return next((code for code in (2, 75) if code in codes), 1 if codes else 0)
