"""The report's topics, found in a second process while the command reads everything else.

Over a year of a big desk, finding the most frequent problems (reading each ticket's stored
words, counting them) and reading the other figures take seconds each, and neither needs
the other: side by side they take the longer of the two, not the sum (docs/benchmarks.md).
The second process reads in a read transaction of its own, begun as the command's is, so
mail filed in that instant may be in one and not the other. Should it fail in any way, or
where processes cannot be forked, `topics_aside` gives None and the command finds the
topics itself: any database error then comes out as every command reports one.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, NoReturn

from mailsupport.report.facts import Period
from mailsupport.report.topics import Topic, find_topics

if TYPE_CHECKING:
    from mailsupport.store.db import Store

__all__ = ["topics_aside", "topics_of"]


@contextmanager
def topics_aside(url: str, period: Period, top: int) -> Iterator[Callable[[], list[Topic] | None]]:
    """Start finding the topics of the database at `url` over `period`; the function given
    waits for them (None: find them here). Enter it before opening a connection of one's
    own: the process is forked, and a connection must not be shared with it."""
    if "fork" not in multiprocessing.get_all_start_methods():
        yield lambda: None
        return
    context = multiprocessing.get_context("fork")
    answers, send = context.Pipe(duplex=False)
    worker = context.Process(
        target=_find, args=(send, url, period.since, period.until, top), daemon=True
    )
    try:
        worker.start()
    except OSError:  # no process to be had (a limit): the command does it all
        answers.close()
        send.close()
        yield lambda: None
        return
    send.close()  # ours: the worker's end is its own

    def result() -> list[Topic] | None:
        try:
            found = answers.recv()  # EOFError when it ended without an answer
        except (EOFError, OSError):
            return None
        return found if isinstance(found, list) else None

    try:
        yield result
    finally:
        if worker.is_alive():  # the command stopped before it asked (an error, Ctrl-C)
            worker.terminate()
        worker.join()
        answers.close()


def topics_of(url: str, open_store: Callable[[], Store], period: Period, top: int) -> list[Topic]:
    """`find_topics` of the tickets of `period` that are work, read from the database at
    `url` (`open_store` as `store.reader.reading` takes it): what the second process does,
    and what the command does when it could not."""
    from mailsupport.report.database import load_words
    from mailsupport.store.reader import reading

    with reading(url, open_store) as reader:
        words = load_words(reader, period.since, period.until)
    return find_topics(words, top=top)


def _find(send: Connection, url: str, since: datetime, until: datetime, top: int) -> None:
    """In the worker: the topics, or None when anything went wrong (said by the command)."""

    def no_store() -> NoReturn:
        # A database the fast path cannot vouch for (new, behind, another driver) is the
        # command's to create or refuse: two processes must not both try.
        raise LookupError("not read here")

    gc.disable()  # many small objects, no cycles (see the report command)
    found: list[Topic] | None = None
    try:
        found = topics_of(url, no_store, Period(since, until), top)
    except BaseException:  # Ctrl-C too: the command finds them itself, or says why it stopped
        found = None
    finally:
        send.send(found)
        send.close()
