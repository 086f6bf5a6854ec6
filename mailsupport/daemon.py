"""`mailsupport daemon`: take mail from the IMAP folder as it arrives, until told to stop.

The daemon is `poll` in a loop, with the same exactly-once FolderPoller and the same folder
lock, held for its whole life. Between passes it waits in IMAP IDLE when the server offers it
(so new mail is taken at once), else it sleeps MAILSUPPORT_IMAP_POLL_SECONDS. A failing
server or database is retried with exponential backoff; a second daemon on the same folder
stands by and takes over when the first one dies.

Every wait is sliced to about a second, so a stop request (SIGTERM, SIGINT) is noticed soon;
a pass in progress finishes the message in hand, commits, and the daemon exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol

from imapclient import IMAPClient

from mailsupport.config import Settings
from mailsupport.errors import (
    ConfigError,
    GrantRevoked,
    MailSupportError,
    PermanentError,
    TemporaryError,
)
from mailsupport.imapconn import connect, disconnect, server_errors
from mailsupport.locks import Lock, folder_lock
from mailsupport.logs import log_to_stderr, name_mailboxes, secrets_of
from mailsupport.mailboxes import Mailboxes, load_mailboxes
from mailsupport.parsing.workers import ParserPool
from mailsupport.pipeline import NEW, Pipeline, describe
from mailsupport.poll import FolderPoller, PollResult, record_failure
from mailsupport.store.db import Store

log = logging.getLogger(__name__)

# RFC 2177: servers may drop a client that has been idle for 30 minutes, so IDLE is ended and
# issued again before that. (Module constants so tests can shorten them.)
IDLE_REISSUE_SECONDS = 29 * 60
# The longest a single wait lasts before the stop flag and due tasks are looked at again.
WAIT_SLICE_SECONDS = 1.0
# The first retry waits up to this long; each further failure doubles it, up to
# MAILSUPPORT_IMAP_RETRY_MAX_SECONDS.
BACKOFF_FIRST_SECONDS = 1.0

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
# A configuration error that goes on (a revoked sign-in, a refused login) is logged again
# only after this long, not on every retry.
REPEAT_LOG_SECONDS = 3600.0


@dataclass(frozen=True)
class Periodic:
    """Work the active daemon does on its own schedule, between passes over the folder."""

    name: str
    every: float  # seconds
    run: Callable[[], None]


OUTBOX = "outbox"
OUTBOX_SECONDS = 30.0  # how often the active daemon sends what the outbox holds


NOTIFY = "notifications"
NOTIFY_SECONDS = 60.0  # agents' digests and SLA warnings: a minute late at most

SPAM_PURGE = "spam purge"
SPAM_PURGE_SECONDS = 3600.0  # MAILSUPPORT_SPAM_DAYS counts days: once an hour is plenty


def periodic_tasks(settings: Settings, store: Store) -> list[Periodic]:
    """What the daemon runs besides taking mail: agents' digests and SLA warnings, the
    outbox, when SMTP is set up, and the purge of old spam, when MAILSUPPORT_SPAM_DAYS is
    set."""
    tasks: list[Periodic] = []

    def notify_agents() -> None:
        from mailsupport.notify import run_due

        digests = run_due(store, settings, datetime.now(UTC))
        if digests:
            log.info("notifications: %d digests queued", digests)

    tasks.append(Periodic(NOTIFY, NOTIFY_SECONDS, notify_agents))
    if load_mailboxes(settings).sending:

        def send_outbox() -> None:
            from mailsupport.outbox.delivery import describe_delivery, flush

            # Everything due, in rounds: a burst of acknowledgements goes out in one go.
            counts = flush(store, settings, lambda: datetime.now(UTC))
            if counts:
                log.info("outbox: %s", describe_delivery(counts))

        tasks.append(Periodic(OUTBOX, OUTBOX_SECONDS, send_outbox))
    if settings.spam_days:

        def purge_spam() -> None:
            from mailsupport.store.spam import purge_old_spam

            purged = purge_old_spam(store, settings.spam_days, datetime.now(UTC))
            if purged.numbers:
                log.info(
                    "spam: purged %d tickets not updated for %d days; %d messages kept in the "
                    "quarantine",
                    len(purged.numbers), settings.spam_days, purged.kept,
                )  # fmt: skip

        tasks.append(Periodic(SPAM_PURGE, SPAM_PURGE_SECONDS, purge_spam))
    return tasks


class NowAndThen:
    """Logs a lasting error once, then again only after REPEAT_LOG_SECONDS (at DEBUG in
    between): not a line on every retry."""

    def __init__(self) -> None:
        self._said: dict[str, float] = {}  # errors logged -> when (monotonic)

    def say(self, error: MailSupportError, line: str) -> None:
        text, now = str(error), time.monotonic()
        last = self._said.get(text)
        if last is not None and now - last < REPEAT_LOG_SECONDS:
            log.debug("%s", line)
            return
        self._said[text] = now
        log.error("%s", line)

    def forget(self) -> None:
        """Work resumed: the next error is news again."""
        self._said.clear()


def run_due_tasks(tasks: Iterable[Periodic], due: dict[str, float], said: NowAndThen) -> None:
    """Run the periodic tasks whose time has come (`due`: name -> monotonic time), each
    failure logged and the rest run all the same: taking mail goes on."""
    for task in tasks:
        if time.monotonic() < due[task.name]:
            continue
        due[task.name] = time.monotonic() + task.every
        try:
            task.run()
        except TemporaryError as error:
            log.warning("%s: %s", task.name, error)
        except ConfigError as error:  # e.g. SMTP login refused
            said.say(error, f"{task.name}: {error}")
        except PermanentError as error:
            log.error("%s: %s", task.name, error)


class Backoff:
    """Exponential backoff with full jitter: the n-th wait is random in [0, first * 2**n],
    capped. Random, so that many clients of one server do not retry in lockstep."""

    def __init__(
        self,
        cap: float,
        first: float = BACKOFF_FIRST_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.cap = cap
        self.first = first
        self.rand = rand
        self.failures = 0

    def next(self) -> float:
        bound = min(self.cap, self.first * 2 ** min(self.failures, 32))
        self.failures += 1
        return self.rand() * bound

    def reset(self) -> None:
        self.failures = 0


class Daemon:
    """Holds the folder lock and keeps taking mail until request_stop() is called."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        now: Callable[[], datetime],
        *,
        connector: Callable[[Settings], IMAPClient] = connect,
        tasks: Iterable[Periodic] | None = None,
        mailboxes: Mailboxes | None = None,
        parsers: ParserPool | None = None,
        after_pass: Callable[[PollResult], None] | None = None,
        keep_trying: Callable[[ConfigError], bool] | None = None,
    ) -> None:
        """`mailboxes` and `parsers` go to the Pipeline (daemons.py shares one pool among
        the mailboxes); `after_pass` is told of each pass. `keep_trying` is asked about a
        configuration error before the first successful pass: True logs it and tries again
        slowly, as later on; without it, or on False, run() raises it."""
        self.settings = settings
        self.store = store
        self.now = now
        self.connector = connector
        self.pipeline = Pipeline(settings, store, mailboxes=mailboxes, parsers=parsers)
        self.after_pass = after_pass
        self.keep_trying = keep_trying
        self.lock = Lock(store, *folder_lock(settings))
        self.tasks = list(periodic_tasks(settings, store) if tasks is None else tasks)
        self._due = {task.name: 0.0 for task in self.tasks}  # all run once at the start
        self.backoff = Backoff(cap=settings.imap_retry_max_seconds)
        self.where = f"{settings.imap_account} folder {settings.imap_folder}"
        self._stop_reason: str | None = None
        self._worked = False  # a pass succeeded: configuration errors from now on are retried
        self._troubled = False  # the last attempt failed: say so when work resumes
        self._lost_lock = False  # the lock slipped away: say so when it is ours again
        self._said = NowAndThen()  # lasting configuration errors

    # -- stopping -----------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the daemon to finish the message in hand and return. Safe in a signal handler:
        it only sets a flag."""
        if self._stop_reason is None:
            self._stop_reason = reason

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Work until stopped. Raises ConfigError when the configuration is wrong at startup
        (before the first successful pass); any later trouble is logged and retried."""
        log.info("daemon started for %s", self.where)
        self._check()  # a broken template or rules file stops us before taking mail
        try:
            while not self.stopping:
                if self._take_lock():
                    self._serve()
        finally:
            self.lock.release()
            self.pipeline.close()
            log.info("daemon stopped (%s)", self._stop_reason or "error")

    @property
    def worked(self) -> bool:
        """A pass has succeeded: configuration errors from now on are retried."""
        return self._worked

    def _check(self) -> None:
        while not self.stopping:
            try:
                self.pipeline.check()
                return
            except ConfigError as error:
                self._failed_at_startup(error)

    def _take_lock(self) -> bool:
        """Take the folder lock, standing by while another poller holds it."""
        standing_by = False
        while not self.stopping:
            try:
                if self.lock.acquire():
                    if standing_by:
                        log.info("took over %s: the other poller is gone", self.where)
                    elif self._lost_lock:
                        log.info("holding the lock on %s again", self.where)
                    self._lost_lock = False
                    return True
            except TemporaryError as error:
                self._trouble(error)
                continue
            if not standing_by:
                log.info(
                    "another poller of %s is active; standing by (trying every %s s)",
                    self.where, self.settings.imap_poll_seconds,
                )  # fmt: skip
                standing_by = True
            self._pause(self.settings.imap_poll_seconds)
        return False

    def _serve(self) -> None:
        """While the lock is ours: connect, work, and on failure back off and reconnect."""
        while not self.stopping and not self._lock_lost():
            try:
                client = self.connector(self.settings)
            except ConfigError as error:
                self._misconfigured(error)
                continue
            except TemporaryError as error:
                self._trouble(error)
                continue
            try:
                self._work(client)
            except ConfigError as error:
                self._misconfigured(error)
            except (TemporaryError, PermanentError) as error:
                # Permanent: the database refused something it always will; the mail that
                # caused it is quarantined, so back off and go on rather than exit.
                self._trouble(error)
            finally:
                disconnect(client)

    def _work(self, client: IMAPClient) -> None:
        """Passes over the folder on one connection, waiting for mail in between."""
        with server_errors(self.settings):  # CAPABILITY may need a round trip
            poller = FolderPoller(self.settings, self.pipeline, client)
            use_idle = bool(client.has_capability("IDLE"))
        announced = False
        while not self.stopping and not self._lock_lost():
            result = poller.poll(self.now, should_stop=lambda: self.stopping)
            log.debug("pass over %s: %s", self.where, describe(result.counts))
            self._worked = True
            if self.after_pass is not None:
                self.after_pass(result)
            self.backoff.reset()
            if self._troubled:
                log.info("working again on %s", self.where)
                self._troubled = False
                self._said.forget()
            if result.counts[NEW] and OUTBOX in self._due:
                self._due[OUTBOX] = 0.0  # acknowledge new tickets now, not at the next tick
            self._run_due_tasks()
            if self.stopping:
                return
            every = self.settings.imap_poll_seconds
            if not announced:
                how = f"IDLE, and a poll every {every} s" if use_idle else f"a poll every {every} s"
                log.info("waiting for new mail in %s (%s)", self.where, how)
                announced = True
            if use_idle:
                if self._grew_meanwhile(client):
                    continue  # mail came during the pass or the tasks: take it, then IDLE
                self._idle(client, min(every, IDLE_REISSUE_SECONDS))
            else:
                self._pause(every)

    def _grew_meanwhile(self, client: IMAPClient) -> bool:
        """Whether the folder grew since the pass looked (NOOP hands over the pending
        EXISTS). Not every server reports, when IDLE starts, mail that came before it:
        without this, such mail would wait for the next poll."""
        with server_errors(self.settings):
            _, responses = client.noop()
        return any(_new_mail(r) for r in responses)

    def _idle(self, client: IMAPClient, seconds: float) -> None:
        """Wait in IDLE until new mail arrives, `seconds` pass, or a stop is requested."""
        end = time.monotonic() + seconds
        with server_errors(self.settings):
            sock = client.socket()
            client.idle()
            while not self.stopping:
                left = end - time.monotonic()
                if left <= 0:
                    break
                responses = client.idle_check(timeout=self._slice(left))
                if any(_new_mail(r) for r in responses):
                    log.debug("new mail announced in %s", self.where)
                    break
                if any(r and r[0] == b"BYE" for r in responses):
                    break  # the server is leaving: idle_done() below finds out how
                if not responses and _readable(sock):
                    # idle_check() swallows end-of-file and returns nothing; a socket still
                    # readable after it drained everything is closed (or just got data).
                    # Either way, ending IDLE tells: DONE fails on a dead connection.
                    break
                self._run_due_tasks()
            client.idle_done()

    # -- waiting and trouble ------------------------------------------------------------------

    def _pause(self, seconds: float) -> None:
        """Sleep in short slices, so that a stop request is noticed and tasks run on time."""
        end = time.monotonic() + seconds
        while not self.stopping:
            self._run_due_tasks()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(self._slice(left))

    def _slice(self, left: float) -> float:
        """How long the next wait may last: up to `left`, a slice, and the next due task."""
        wait = min(left, WAIT_SLICE_SECONDS)
        if self.tasks and self.lock.held:
            wait = min(wait, min(self._due.values()) - time.monotonic())
        return max(wait, 0.0)

    def _trouble(self, error: TemporaryError) -> None:
        record_failure(self.store, self.settings, error, self.now())
        delay = self.backoff.next()
        log.warning("%s; trying again in %.1f s", error, delay)
        self._troubled = True
        self._pause(delay)

    def _misconfigured(self, error: ConfigError) -> None:
        record_failure(self.store, self.settings, error, self.now())
        revoked = isinstance(error, GrantRevoked)
        if not self._worked and not revoked:
            self._failed_at_startup(error)
            return
        # It worked before (say the password was changed on the server), or a person must
        # sign in again: a daemon that exits would only be restarted into the same error,
        # and it can still send the outbox. Keep trying, slowly; `auth login` is seen at
        # the next try (a revoked sign-in is known from the database without asking).
        cap = self.backoff.cap
        delay = min(cap, self.settings.imap_poll_seconds) if revoked else cap
        self._said.say(error, f"{error}; trying again every {delay:.0f} s")
        self._troubled = True
        self._pause(delay)

    def _failed_at_startup(self, error: ConfigError) -> None:
        """Before the first successful pass: raise, to exit 2 with the message for a person
        to fix; or, when keep_trying says so (other mailboxes work), log it and try again
        slowly."""
        if self.keep_trying is None or not self.keep_trying(error):
            raise error
        delay = self.backoff.cap
        self._said.say(error, f"{error}; trying again every {delay:.0f} s")
        self._troubled = True
        self._pause(delay)

    def _lock_lost(self) -> bool:
        if self.lock.still_held():
            return False
        if self.lock.held:
            log.warning("lost the lock on %s (its database session ended)", self.where)
            self.lock.release()
            self._lost_lock = True
        return True

    def _run_due_tasks(self) -> None:
        if self.lock.held:  # a standby daemon leaves the work to the active one
            run_due_tasks(self.tasks, self._due, self._said)


def _new_mail(response: Any) -> bool:
    """`* 12 EXISTS` (and `* 1 RECENT`) in IDLE mean the folder has grown."""
    return len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT")


def _readable(sock: Any) -> bool:
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed under us
        return True


# -- process setup: logging and signals (used by the CLI command) -----------------------------


def setup_logging(settings: Settings, mailboxes: Mailboxes | None = None) -> None:
    """Timestamped lines on stderr, at INFO (one line per message is the daemon's record of
    its work), or DEBUG when MAILSUPPORT_LOG_LEVEL=DEBUG. With a mailboxes file, each line
    logged in a mailbox's thread names it, and every mailbox's passwords are blanked out."""
    level = logging.DEBUG if settings.log_level == "DEBUG" else logging.INFO
    boxes = mailboxes.all if mailboxes is not None else ()
    secrets = [secret for box in boxes for secret in secrets_of(box.settings)]
    log_to_stderr(settings, level, LOG_FORMAT, more_secrets=secrets)
    if settings.mailboxes_file:
        name_mailboxes()
    # Libraries' INFO chatter ("Connection closed" on every reconnect, Alembic's plugin list)
    # would drown the one line per message; at DEBUG they may speak.
    for name in ("imapclient", "alembic"):
        logging.getLogger(name).setLevel(level if level == logging.DEBUG else logging.WARNING)


class Stoppable(Protocol):
    def request_stop(self, reason: str = ...) -> None: ...


@contextlib.contextmanager
def stop_on_signals(daemon: Stoppable) -> Iterator[None]:
    """SIGTERM and SIGINT ask the daemon to stop; a second one ends the process at once
    (what was not committed is simply taken again next time)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
