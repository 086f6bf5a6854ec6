"""Filing a batch of messages in one transaction (Pipeline.take): without a savepoint per
message, falling back to one per message when a message needs it, and again from its start
when another transaction was in the way (PostgreSQL, several pollers: store/claims.py)."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import exc
from sqlmodel import Session

from mailsupport.errors import MailSupportError, PermanentError, TemporaryError
from mailsupport.practice import Dropped
from mailsupport.store import direct
from mailsupport.store.claims import contended, verify
from mailsupport.store.db import Store, translate_db_error
from mailsupport.store.searchindex import indexed_at_end

log = logging.getLogger(__name__)

# How often a batch is filed again after another transaction was in the way (a deadlock
# between two pollers, a Message-ID both indexed), before the poll stops with the temporary
# error; from the CONTENDED_ALONE-th time on with no other writer beside it.
CONTENDED_TRIES = 5
CONTENDED_ALONE = 2
# Messages of a batch whose reads are asked for together before they are filed
# (store/window.py): one wait on PostgreSQL for this many messages instead of two or three
# a message. The parse workers go on with the messages behind them meanwhile.
READ_AHEAD = 32
# A batch's messages and their parses are held until it commits (it may be filed again): a
# batch ends at this many bytes of them too, whatever its count (Pipeline.run; an IMAP
# poll fetches its batches by the same bound, sources/imap.py).
BATCH_BYTES = 16 * 1024 * 1024

Pair = TypeVar("Pair")
Result = TypeVar("Result")


class NeedsSavepoint(Exception):
    """A message of a batched attempt needs the savepoint it was filed without: the batch is
    taken again one message at a time."""


def set_aside_when_careful(error: Exception) -> bool:
    """Whether the careful path (Pipeline._failed) sets the message aside and goes on after
    `error` (or finds it a duplicate), rather than stopping the batch: then a batched attempt
    needs the savepoint. The one place that tells the two apart."""
    if isinstance(error, Dropped | exc.IntegrityError):
        return True
    if isinstance(error, exc.DBAPIError):
        return isinstance(translate_db_error(error), PermanentError)
    return not isinstance(error, MailSupportError | OSError)


@contextmanager
def batched(session: Session, on: bool) -> Iterator[None]:
    """A batched attempt sends its writes without waiting for their answers (PostgreSQL):
    they come with the next read's, so the server's refusal of a write may come out while a
    later message is filed, or at the end of the batch. Wherever it comes out, the batch
    needs the savepoints it went without (NeedsSavepoint)."""
    if not on:
        yield
        return
    try:
        with direct.pipelined(session):
            yield
    except exc.DBAPIError as error:  # (a message's other failures are its own: process())
        if not set_aside_when_careful(error):
            raise
        raise NeedsSavepoint(repr(error)) from None


def file_batch(
    store: Store,
    pairs: Iterator[Pair],
    file_one: Callable[[Session, Pair, bool], Result],
    finish: Callable[[Session, list[Result]], None],
    *,
    careful: bool,
    read_ahead: Callable[[Session, list[Pair]], None] | None = None,
) -> list[Result]:
    """`file_one(session, pair, careful)` for each of `pairs` in one intake transaction, then
    `finish`; the results in order. Not careful: no savepoints, and the batch is filed again
    carefully when a message raises NeedsSavepoint. When another transaction was in the
    way, the batch is filed again from its start, after a pause that grows; after the
    second time, alone. `read_ahead(session, pairs)`, when given, is called before each
    READ_AHEAD pairs are filed, in their transaction."""
    seen: list[Pair] = []

    def replayed() -> Iterator[Pair]:
        yield from seen  # what the earlier attempts took, then the rest
        for pair in pairs:
            seen.append(pair)
            yield pair

    tries = 0
    while True:
        try:
            # Met again and again: alone at last, as every other writer (sure to get on).
            alone = tries >= CONTENDED_ALONE
            with (
                store.write(intake=not alone) as session,
                batched(session, not careful),
                indexed_at_end(session),  # SQLite's search index, by one statement
            ):
                results: list[Result] = []
                for window in _windows(replayed(), READ_AHEAD if read_ahead else 1):
                    if read_ahead is not None:
                        read_ahead(session, window)
                    results += [file_one(session, pair, careful) for pair in window]
                verify(session)  # raises Contended when another poller was in the way
                finish(session, results)
            return results
        except NeedsSavepoint as need:
            log.info("batch taken again one message at a time: %s", need)
            careful = True
        except TemporaryError as error:
            tries += 1
            if not contended(error) or tries >= CONTENDED_TRIES:
                raise
            log.warning("batch taken again, another writer was in the way: %s", error)
            time.sleep(min(0.05 * tries, 1.0))


def _windows(pairs: Iterator[Pair], size: int) -> Iterator[list[Pair]]:
    """`pairs` in lists of `size` (the last one shorter)."""
    while window := list(itertools.islice(pairs, size)):
        yield window
