"""`mailsupport daemon` for every mailbox of the desk: one process, a thread per folder.

Each polled mailbox's folder gets a daemon.Daemon of its own, in a thread of its own: its
own folder lock, IDLE connection and reconnect backoff, so that a server that is down or a
sign-in that fails holds up no other mailbox. Mailboxes in the same folder of the same
account are watched once (poll.polled_mailboxes). All share one pool of parse workers
(SharedParserPool: one batch at a time, as the database takes one writer at a time anyway)
and the store: a mailbox costs a thread, a connection and a Daemon's state, never a process.

The periodic tasks (the outbox, the spam purge) run here, in the main thread, once for the
process, while it holds at least one folder's lock: a process that only stands by leaves
them to the active one, as with one mailbox. A pass that opened new tickets makes the
outbox due at once.

At startup a mailbox whose configuration is wrong (a refused password, no such folder) is
logged and tried again every MAILSUPPORT_IMAP_RETRY_MAX_SECONDS while the others work; when
every mailbox is wrong, the daemon exits 2, as it does with one mailbox.

Several daemons, on several machines, may serve the same mailboxes file on one PostgreSQL
database: each folder's lock is held by one of them (an advisory lock on a database
connection of its own), the others stand by for that folder and take it over when it is
free, so no message is taken twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial

from imapclient import IMAPClient

from mailsupport.config import Settings
from mailsupport.daemon import (
    OUTBOX,
    WAIT_SLICE_SECONDS,
    Daemon,
    NowAndThen,
    Periodic,
    periodic_tasks,
    run_due_tasks,
)
from mailsupport.errors import ConfigError
from mailsupport.imapconn import connect
from mailsupport.logs import in_mailbox
from mailsupport.mailboxes import Mailbox, Mailboxes
from mailsupport.parsing.workers import SharedParserPool
from mailsupport.pipeline import NEW, parser_pool
from mailsupport.poll import PollResult, polled_mailboxes
from mailsupport.store.db import Store

log = logging.getLogger(__name__)


class Daemons:
    """A Daemon for each polled mailbox folder, each in its thread, until request_stop()."""

    def __init__(
        self,
        settings: Settings,
        mailboxes: Mailboxes,
        store: Store,
        now: Callable[[], datetime],
        *,
        connector: Callable[[Settings], IMAPClient] = connect,
        tasks: Iterable[Periodic] | None = None,
    ) -> None:
        self.settings = settings
        self.watched, self.same_folder = polled_mailboxes(mailboxes)
        self.parsers = parser_pool(settings, SharedParserPool)
        self.tasks = list(periodic_tasks(settings, store) if tasks is None else tasks)
        self._due = {task.name: 0.0 for task in self.tasks}  # all run once at the start
        self._said = NowAndThen()  # the tasks' lasting configuration errors
        self._stop_reason: str | None = None
        self._wake = threading.Event()  # a thread ended, or new tickets want the outbox
        self._guard = threading.Lock()
        self._wrong: dict[str, ConfigError] = {}  # mailboxes misconfigured since startup
        self._fatal: BaseException | None = None  # ends the process: run() raises it
        self.daemons = {
            box.name: self._daemon(box, mailboxes, store, now, connector) for box in self.watched
        }
        self._threads: list[threading.Thread] = []

    def _daemon(
        self,
        box: Mailbox,
        mailboxes: Mailboxes,
        store: Store,
        now: Callable[[], datetime],
        connector: Callable[[Settings], IMAPClient],
    ) -> Daemon:
        """The mailbox's Daemon: no tasks of its own, the shared parse workers."""
        return Daemon(
            box.settings,
            store,
            now,
            connector=connector,
            tasks=[],
            mailboxes=mailboxes,
            parsers=self.parsers,
            after_pass=partial(self._after_pass, box),
            keep_trying=partial(self._keep_trying, box),
        )

    # -- stopping -----------------------------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask every mailbox's daemon to finish the message in hand and return. Safe in a
        signal handler: it only sets flags."""
        if self._stop_reason is None:
            self._stop_reason = reason
        for daemon in self.daemons.values():
            daemon.request_stop(reason)

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    # -- the process --------------------------------------------------------------------------

    def run(self) -> None:
        """Watch every mailbox until stopped. Raises ConfigError when there is no mailbox to
        watch, or every one is misconfigured at startup."""
        if not self.watched:
            raise ConfigError(
                f"no mailbox in {self.settings.mailboxes_file} has an IMAP server (imap_host): "
                "the daemon has nothing to watch"
            )
        if self.settings.mailboxes_file:
            log.info(
                "watching %d mailbox folders: %s",
                len(self.watched), ", ".join(box.name for box in self.watched),
            )  # fmt: skip
            for name, other in self.same_folder.items():
                log.info("mailbox %s: the same folder as mailbox %s, watched once", name, other)
        self.parsers.start()  # before the threads: see SharedParserPool
        try:
            for box in self.watched:
                thread = threading.Thread(
                    target=self._serve, args=(box,), name=f"mailbox {box.name}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            while not self.stopping and self._fatal is None:
                if not any(thread.is_alive() for thread in self._threads):
                    break
                self._run_due_tasks()
                if self._wake.wait(self._slice()):
                    self._wake.clear()
        finally:
            for daemon in self.daemons.values():
                daemon.request_stop(self._stop_reason or "error")
            for thread in self._threads:
                thread.join()
            self.parsers.close()
        if self._fatal is not None:
            raise self._fatal

    def _serve(self, box: Mailbox) -> None:
        """One mailbox's thread: its Daemon, started again after a crash while there are
        other mailboxes to keep working (alone, a crash ends the process, as it always
        did)."""
        daemon = self.daemons[box.name]
        with in_mailbox(box.name if self.settings.mailboxes_file else ""):
            try:
                while not self.stopping:
                    try:
                        daemon.run()
                        return
                    except ConfigError as error:  # every mailbox is wrong (_keep_trying)
                        self._fatal = self._fatal or self._all_wrong(error)
                        return
                    except Exception as error:
                        if len(self.watched) == 1:
                            self._fatal = error
                            return
                        delay = box.settings.imap_retry_max_seconds
                        log.exception("stopped by an error; starting again in %d s", delay)
                        self._sleep(delay)
            finally:
                self._wake.set()

    def _keep_trying(self, box: Mailbox, error: ConfigError) -> bool:
        """Daemon.keep_trying: a mailbox misconfigured at startup is tried again slowly,
        unless every mailbox is."""
        with self._guard:
            self._wrong[box.name] = error
            return not all(name in self._wrong for name in self.daemons)

    def _all_wrong(self, last: ConfigError) -> ConfigError:
        if len(self._wrong) <= 1:
            return last  # one mailbox: its own words, as the daemon always said them
        problems = "; ".join(f"mailbox {name}: {error}" for name, error in self._wrong.items())
        return ConfigError(f"every mailbox failed at startup: {problems}")

    def _after_pass(self, box: Mailbox, result: PollResult) -> None:
        if box.name in self._wrong:
            with self._guard:
                self._wrong.pop(box.name, None)
        if result.counts[NEW] and OUTBOX in self._due:
            self._due[OUTBOX] = 0.0  # acknowledge new tickets now, not at the next tick
            self._wake.set()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(WAIT_SLICE_SECONDS, max(end - time.monotonic(), 0.0)))

    # -- the periodic tasks, once for the process ---------------------------------------------

    def _active(self) -> bool:
        """Whether this process holds any folder's lock (else it only stands by)."""
        return any(daemon.lock.held for daemon in self.daemons.values())

    def _slice(self) -> float:
        wait = WAIT_SLICE_SECONDS
        if self.tasks and self._active():
            wait = min(wait, min(self._due.values()) - time.monotonic())
        return max(wait, 0.0)

    def _run_due_tasks(self) -> None:
        if self._active():  # a standby process leaves the work to the active one
            run_due_tasks(self.tasks, self._due, self._said)
