"""Parsing in worker processes: every core at work, and a time limit on each message.

The main process stores, threads and acknowledges; the workers parse the messages it will
need next. A worker that takes longer than the limit on one message is killed and replaced,
and that message is quarantined: no message can stall the mailbox behind it. Results come
back in the order the messages went in, so the caller's order (UIDs, mbox order) holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol, TypeVar

from mailsupport.errors import PermanentError
from mailsupport.mail import Inbound
from mailsupport.parsing.message import parse
from mailsupport.threads import DEFAULT_TICKET_TAG, NO_SUBJECT, normalize_subject, tag_pattern_of
from mailsupport.topicterms import text_terms, ticket_terms_body
from mailsupport.words import message_stems

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ParseFailure:
    """Why a message could not be parsed: the quarantine's error text."""

    detail: str
    trace: str = ""  # the traceback of a bug of ours, for the log


Parsed = Inbound | ParseFailure


class FilePlace(Protocol):
    """Where a worker stores a parse's attachments (store/files.AttachmentStore)."""

    def put(self, connection: Any, data: bytes) -> str: ...


def parse_safely(raw: bytes) -> Parsed:
    """parse(), with every failure turned into a ParseFailure."""
    try:
        return parse(raw)
    except PermanentError as error:
        return ParseFailure(str(error))
    except Exception as error:  # a parser bug must not block the mailbox behind it
        detail = f"internal error while parsing: {type(error).__name__}: {error}"
        return ParseFailure(detail, traceback.format_exc())


def with_stems(parsed: Parsed) -> Parsed:
    """The parse with the search stems of its subject and text, as the message's row will
    hold them (store/stems.py), and the report's terms of its text (topicterms.py): the
    worker computes them, so the process that stores the message does not."""
    if isinstance(parsed, ParseFailure):
        return parsed
    stems = message_stems(parsed.subject, parsed.text)
    in_text = text_terms(parsed.text)
    title = normalize_subject(parsed.subject, _DEFAULT_TAG) or NO_SUBJECT
    body = ticket_terms_body(title, parsed.text, in_text)
    return replace(parsed, stems=stems, text_terms=in_text, title_terms=(title, body))


_DEFAULT_TAG = tag_pattern_of(DEFAULT_TICKET_TAG)


def store_attachments(parsed: Parsed, files: FilePlace | None) -> None:
    """Store the parse's attachments through `files`, so that the process filing the
    message finds each one there and does not write and fsync it (its put() writes only what
    a place lacks; an attachment took as long there as the rest of its message). One that
    cannot be stored now (a full disk) is left to the filing process, which tries again and
    says why it cannot."""
    if files is None or not isinstance(parsed, Inbound):
        return
    for part in parsed.attachments:
        with contextlib.suppress(Exception):  # never a parse lost for it
            files.put(None, part.data)


def _die_with_parent(parent: int) -> None:
    """Linux: be killed when the parent dies, even mid-way through a stalling message that
    no parent is left to time out. Elsewhere the closed pipe ends a worker between messages."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(0)


_PR_SET_PDEATHSIG = 1

# The size asked for a pipe that carries messages to a worker (Linux lets any process ask
# for up to /proc/sys/fs/pipe-max-size, 1 MiB unless changed). Writing a larger message, or
# elsewhere, waits while the worker reads it, as before.
PIPE_BYTES = 1 << 20
# How many messages a worker holds at most before it has answered the first of them. With
# more than one, a worker that finishes a message finds the next in its pipe: it need not be
# woken for it (on a busy machine a write that wakes a worker cost the caller 0.4 ms), and
# the caller, storing, finds parses ready rather than waiting for the one it handed over last.
# Intake asks for a window of 32 parses (batching.READ_AHEAD) before it files the first of
# them, then files them without asking for more: the workers must hold the next window's
# messages meanwhile, or they stand idle while the caller files and it waits while they parse
# (a sixth of an import's time with 4 a worker). Their pipes bound it by bytes as well.
AHEAD = 32
# What multiprocessing's send_bytes writes before a message (a length, 4 or 12 bytes).
_FRAME = 12


def _widen(pipe: Connection) -> int:
    """Widen the pipe; returns how many bytes it holds unread (0: not known)."""
    try:
        import fcntl

        # Over the user's limit: as it is.
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return int(fcntl.fcntl(pipe.fileno(), fcntl.F_GETPIPE_SZ))
    except (ImportError, OSError, AttributeError):  # not Linux: no fcntl, or no F_*PIPE_SZ
        return 0


def _close_all_but(keep: set[int]) -> None:
    try:
        open_fds: Iterable[int] = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: try the usual range
        open_fds = range(3, 4096)
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _serve(
    requests: Connection,
    results: Connection,
    others: list[Connection],
    parent: int,
    files: FilePlace | None,
) -> None:
    """A worker's life: bytes in, a Parsed out, until the parent closes the pipe."""
    _die_with_parent(parent)
    for other in others:  # the parent's ends of the pipes, inherited by fork: closed, so
        other.close()  # that EOF comes when the parent closes (or dies)
    # Everything else fork handed down too: the folder lock's file, database and IMAP
    # connections. Holding them would keep the lock (and the PostgreSQL session that holds
    # an advisory lock) alive after the parent died. Only the pipes and stdio stay.
    _close_all_but({requests.fileno(), results.fileno()})
    # Ctrl-C and systemd's SIGTERM reach the whole group: the parent finishes the message in
    # hand, which may need our result, then closes the pipe, and that ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        try:
            raw = requests.recv_bytes()
            parsed = with_stems(parse_safely(raw))
            store_attachments(parsed, files)
            # The message's bytes go before its result is pickled, and the result before
            # the next message comes: a large message is never in memory twice.
            del raw
            results.send(parsed)
            del parsed
        except (EOFError, OSError):  # the parent is gone or done with us
            return


@dataclass(slots=True)
class _Job:
    item: Any
    raw: bytes | None = None  # until it is parsed (handed over again if its worker dies)
    result: Parsed | None = None
    done: bool = False


class _Worker:
    def __init__(self, context: Any, others: list[_Worker], files: FilePlace | None) -> None:
        # A pipe each way: a message's bytes go into a pipe widened to PIPE_BYTES, so that
        # handing a worker one (up to that size) never waits for the worker to read it.
        their_requests, self.requests = context.Pipe(duplex=False)
        self.results, their_results = context.Pipe(duplex=False)
        self.capacity = _widen(self.requests)
        # Its answers wait in theirs while the caller files what it has (a pipe left as it
        # is holds 64 KiB: a handful of parses, then the worker would stop).
        _widen(self.results)
        inherited = [self.requests, self.results]
        for worker in others:
            inherited += [worker.requests, worker.results]
        self.process = context.Process(
            target=_serve,
            args=(their_requests, their_results, inherited, os.getpid(), files),
            daemon=True,
        )
        self.process.start()
        their_requests.close()  # only the worker holds its ends: its death shows as EOF here
        their_results.close()
        # The messages handed over and not answered, in order: it parses the first.
        self.jobs: deque[_Job] = deque()
        self.unanswered = 0  # their bytes, as written into the pipe
        # When it began the first (monotonic): handed over, or the one before answered.
        self.since = 0.0

    def has_room(self, size: int) -> bool:
        """Whether a message of `size` bytes can be handed over now without the write
        waiting for the worker. An idle worker reads what it is handed, whatever its size; a
        busy one may be blocked writing a result the caller has not read yet, so what it has
        not answered must fit in its pipe beside the new message, or the two would wait for
        each other."""
        if not self.jobs:
            return True
        fits = self.unanswered + size + _FRAME <= self.capacity
        return len(self.jobs) < AHEAD and fits

    def stop(self, kill: bool = False) -> None:
        if kill and self.process.is_alive():
            self.process.kill()
        self.requests.close()
        self.results.close()
        self.process.join(timeout=5)
        if self.process.is_alive():  # stuck even after EOF: do not wait for it
            self.process.kill()
            self.process.join(timeout=5)


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


class ParserPool:
    """`workers` processes parsing with a limit of `timeout` seconds per message.

    workers=0 parses in this process, without a time limit (for debugging, and where
    processes cannot be forked). Workers start on first use and stop on close(). With
    `files`, the workers store each parse's attachments there (store_attachments)."""

    def __init__(self, workers: int, timeout: float, files: FilePlace | None = None) -> None:
        self.size = workers
        self.timeout = timeout
        self.files = files
        self._workers: list[_Worker] = []
        # Messages read (or taken back from a worker that died) and not handed over yet,
        # waiting for a worker with room for them.
        self._unsent: deque[_Job] = deque()
        # Stop the workers when the pool is dropped without close() (tests, scripts).
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> ParserPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def parse_all(
        self, items: Iterable[T], raw_of: Callable[[T], bytes | None]
    ) -> Generator[tuple[T, Parsed | None], None, None]:
        """Each item with its parse, in the order given. Items for which raw_of returns None
        are not parsed (None comes back). Reads at most AHEAD items per worker ahead."""
        if self.size <= 0:
            for item in items:
                raw = raw_of(item)
                yield item, None if raw is None else parse_safely(raw)
            return
        iterator = iter(items)
        queue: deque[_Job] = deque()  # in input order
        unsent = self._unsent  # empty: every call leaves it so
        exhausted = False
        try:
            while True:
                while True:
                    self._hand_out()
                    if unsent or exhausted:  # read on only when every message is handed over
                        break
                    item = next(iterator, _END)
                    if item is _END:
                        exhausted = True
                        break
                    job = _Job(item, raw_of(item))
                    queue.append(job)
                    if job.raw is None:
                        job.done = True
                    else:
                        unsent.append(job)
                if not queue:
                    return
                if queue[0].done:
                    job = queue.popleft()
                    yield job.item, job.result
                else:
                    self._collect(block=True)
        finally:
            if any(worker.jobs for worker in self._workers):
                self._abandon()  # the caller stopped early: drop what is in flight
            unsent.clear()  # (after _abandon: a worker dying meanwhile puts its messages here)

    # -- the workers ----------------------------------------------------------------------------

    def _new_worker(self, others: list[_Worker]) -> _Worker:
        return _Worker(_context(), others, self.files)

    def _hand_out(self) -> None:
        """Hand over the messages not sent yet, in order, while a worker has room."""
        unsent = self._unsent
        while unsent:
            job = unsent[0]
            assert job.raw is not None
            worker = self._with_room(len(job.raw))
            if worker is None:
                return
            self._hand_over(worker, unsent.popleft())

    def _with_room(self, size: int) -> _Worker | None:
        """The worker to hand a message of `size` bytes: an idle one, else a new one while
        the pool is not full, else the least busy with room for it (None: wait)."""
        if len(self._workers) < self.size or any(not w.jobs for w in self._workers):
            return self._idle()
        roomy = [w for w in self._workers if w.has_room(size)]
        return min(roomy, key=lambda w: len(w.jobs), default=None)

    def _idle(self) -> _Worker:
        """A free worker, started if need be (when the pool has room for one)."""
        idle = next((w for w in self._workers if not w.jobs), None)
        if idle is None:
            idle = self._new_worker(self._workers)
            self._workers.append(idle)
        return idle

    @staticmethod
    def _hand_over(worker: _Worker, job: _Job) -> None:
        assert job.raw is not None
        if not worker.jobs:
            worker.since = time.monotonic()
        worker.jobs.append(job)
        worker.unanswered += len(job.raw) + _FRAME
        with contextlib.suppress(OSError):  # it died between messages: _collect sees EOF
            worker.requests.send_bytes(job.raw)

    def _collect(self, block: bool) -> None:
        """Take the results that are ready (waiting for one when `block`), and replace the
        workers that died or ran over the time limit."""
        busy = [w for w in self._workers if w.jobs]
        if not busy:
            return
        deadline = min(w.since for w in busy) + self.timeout
        ready = wait(
            [w.results for w in busy],
            timeout=max(0.0, deadline - time.monotonic()) if block else 0.0,
        )
        for worker in busy:
            if worker.results in ready:
                try:
                    result: Parsed = worker.results.recv()
                except (EOFError, OSError):
                    self._replace(worker, self._death(worker))
                    continue
                self._finish(worker, result)
                worker.since = time.monotonic()  # it goes on to the next, if any
            elif time.monotonic() - worker.since >= self.timeout:
                detail = (
                    f"parsing took longer than {self.timeout:g} s "
                    "(MAILSUPPORT_PARSE_TIMEOUT); the parser was stopped"
                )
                self._replace(worker, ParseFailure(detail), kill=True)

    @staticmethod
    def _finish(worker: _Worker, result: Parsed) -> None:
        job = worker.jobs.popleft()
        assert job.raw is not None
        worker.unanswered -= len(job.raw) + _FRAME
        job.result, job.done, job.raw = result, True, None

    def _replace(
        self, worker: _Worker, result: Parsed, kill: bool = False, hand_on: bool = True
    ) -> None:
        """The first message of a worker that died or stalled gets `result`; the worker is
        replaced, and the messages it had not begun are handed over again (`hand_on`), as
        the workers have room: the replacement's pipe may hold less than the old one's."""
        self._finish(worker, result)
        if hand_on:
            self._unsent.extendleft(reversed(worker.jobs))  # before those read after them
        worker.stop(kill=kill)
        others = [w for w in self._workers if w is not worker]
        self._workers[self._workers.index(worker)] = self._new_worker(others)

    @staticmethod
    def _death(worker: _Worker) -> ParseFailure:
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            how = f"signal {signal.Signals(-code).name}"
        return ParseFailure(f"the parser process died on this message ({how})")

    def _abandon(self) -> None:
        """Results nobody will read: wait for them briefly, else stop those workers."""
        until = time.monotonic() + 1.0
        while any(w.jobs for w in self._workers) and time.monotonic() < until:
            self._collect(block=False)
            time.sleep(0.01)
        for worker in [w for w in self._workers if w.jobs]:
            self._replace(worker, ParseFailure("abandoned"), kill=True, hand_on=False)


class SharedParserPool(ParserPool):
    """One pool for several threads (the daemon's mailboxes, `poll`'s): each caller has the
    workers to itself from its first parse until its batch is done or closed, the others
    wait their turn. Their memory is then the pool's, however many mailboxes there are.

    Call start() before starting the threads: it forks the workers while the process has
    one thread, so that none inherits a lock that another thread held at the fork."""

    def __init__(self, workers: int, timeout: float, files: FilePlace | None = None) -> None:
        super().__init__(workers, timeout, files)
        self._turn = threading.Lock()

    def start(self) -> None:
        """Start every worker now rather than on first use."""
        with self._turn:
            while len(self._workers) < self.size:
                self._workers.append(self._new_worker(self._workers))

    def parse_all(
        self, items: Iterable[T], raw_of: Callable[[T], bytes | None]
    ) -> Generator[tuple[T, Parsed | None], None, None]:
        with self._turn:
            yield from super().parse_all(items, raw_of)


_END: Any = object()


def _context() -> Any:
    """fork where the platform has it: a worker starts in milliseconds with the parser
    already imported. The workers never touch the parent's sockets or database handles."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")
