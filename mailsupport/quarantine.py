"""The quarantine: messages set aside because they could not be processed.

Read what is there, look at one entry, and take entries through the pipeline again (after a
fix or a settings change): the library side of `mailsupport quarantine`, for scripts too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailsupport.errors import NotFoundError

if TYPE_CHECKING:
    from mailsupport.config import Settings
    from mailsupport.pipeline import Outcome
    from mailsupport.store.db import Store
    from mailsupport.store.models import QuarantineEntry, RawMessage

# Why a retried message is not acknowledged: stored with its ticket's history.
RETRY_NO_ACK = "taken from the quarantine (`mailsupport quarantine retry --ack` acknowledges)"


def entries(store: Store) -> list[tuple[QuarantineEntry, int]]:
    """Every quarantined message, oldest first, with its size in bytes."""
    from sqlmodel import col, select

    from mailsupport.store.models import QuarantineEntry, RawMessage

    with store.read() as session:
        rows = session.exec(
            select(QuarantineEntry, RawMessage.size)
            .join(RawMessage, col(RawMessage.id) == QuarantineEntry.raw_id)
            .order_by(col(QuarantineEntry.id))
        ).all()
    return [(found, int(size)) for found, size in rows]


def entry_dict(found: QuarantineEntry, size: int) -> dict[str, Any]:
    """An entry for `quarantine list --json` and `quarantine show --json`."""
    from mailsupport.store.queries import iso

    return {
        "id": found.id,
        "origin": found.origin,
        "error": found.error,
        "size": size,
        "created_at": iso(found.created_at),
        "retry_count": found.retry_count,
        "last_retry_at": iso(found.last_retry_at),
    }


def entry(store: Store, entry_id: int) -> tuple[QuarantineEntry, RawMessage]:
    """One quarantined message and its stored bytes, or NotFoundError."""
    from mailsupport.store.models import QuarantineEntry, RawMessage

    with store.read() as session:
        found = session.get(QuarantineEntry, entry_id)
        if found is None:
            raise _not_found(entry_id)
        stored = session.get(RawMessage, found.raw_id)
        assert stored is not None
    return found, stored


def retry(
    store: Store,
    settings: Settings,
    clock: Callable[[], datetime],
    entry_id: int | None = None,
    *,
    ack: bool = False,
) -> Iterator[tuple[int, Outcome]]:
    """Process quarantined messages again: entry `entry_id`, or every one when None.

    Each entry is retried in a transaction of its own and yielded, with what became of it,
    after that transaction commits: a caller that reports as it goes reports only what is
    true. An entry released meanwhile (by another retry or a re-import) is skipped. New
    tickets are acknowledged only with `ack`. NotFoundError when `entry_id` is not there."""
    from sqlmodel import col, select

    from mailsupport.pipeline import Incoming, Pipeline
    from mailsupport.store.models import QuarantineEntry, RawMessage

    query = select(QuarantineEntry.id).order_by(col(QuarantineEntry.id))
    if entry_id is not None:
        query = query.where(QuarantineEntry.id == entry_id)
    with Pipeline(settings, store) as pipeline:
        with store.read() as session:
            ids = list(session.exec(query).all())
        if entry_id is not None and not ids:
            raise _not_found(entry_id)
        no_ack = "" if ack else RETRY_NO_ACK
        for current in ids:
            assert current is not None
            with store.write() as session:
                held = session.get(QuarantineEntry, current)
                if held is None:
                    continue
                now = clock()
                held.retry_count += 1
                held.last_retry_at = now
                session.add(held)
                stored = session.get(RawMessage, held.raw_id)
                assert stored is not None
                item = Incoming(stored.data, held.origin, stored.stored_at, no_ack_reason=no_ack)
                outcome = pipeline.process(session, item, now, pipeline.parse_one(item))
            yield current, outcome


def _not_found(entry_id: int) -> NotFoundError:
    return NotFoundError(f"no quarantine entry {entry_id} (see `mailsupport quarantine list`)")
