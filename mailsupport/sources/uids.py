"""Which UIDs of an IMAP folder to take, and in what batches: pure decisions, no server.

The folder's ledger remembers the last UID taken and, for mail that was there before the
first poll (MAILSUPPORT_IMAP_START), up to which UID that history reaches and which of it
was taken (the backlog). `poll --all` or `--since` takes more of that history later, once.
The IMAP source asks the server what these functions say, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any, NamedTuple

FETCH_CHUNK = 500  # UIDs per FETCH of sizes


class Start(NamedTuple):
    """Where a folder's ledger starts: UIDs up to `backlog_until` are history (there before
    the first poll), taken when they match `backlog_search`; UIDs up to `last_uid` are
    never taken by a pass (only by a takeover, see history_search)."""

    last_uid: int
    backlog_until: int
    backlog_search: str  # "", "UNSEEN", "ALL" or "since:YYYY-MM-DD"


def start_from(start: str, uidnext: int) -> Start:
    """The ledger's start for IMAP_START `start` ("new", "unseen", "all", "since:DATE") on a
    folder whose next UID is `uidnext`."""
    existing = uidnext - 1
    if start == "new":
        return Start(existing, existing, "")  # what is there now is history, not news
    if start == "unseen":
        return Start(0, existing, "UNSEEN")
    if start == "all":  # every message there now, as backlog: filed, not acknowledged
        return Start(0, existing, "ALL")
    if start.startswith("since:"):
        return Start(0, existing, start)
    return Start(0, 0, "")


def searches(last_uid: int, backlog_until: int, backlog_search: str) -> list[list[Any]]:
    """The UID SEARCH criteria whose results, together, are the candidates to take."""
    found: list[list[Any]] = []
    start = last_uid + 1
    if backlog_until >= start:
        criteria: list[Any] = [b"UID", f"{start}:{backlog_until}".encode()]
        if backlog_search == "UNSEEN":
            criteria.append(b"UNSEEN")
        elif backlog_search.startswith("since:"):
            criteria += [b"SINCE", _day(backlog_search)]
        found.append(criteria)
        start = backlog_until + 1
    found.append([b"UID", f"{start}:*".encode()])
    return found


def history_search(until: int, taken: str, wanted: str) -> list[Any] | None:
    """The UID SEARCH criteria for the history (UIDs 1 to `until`) that `wanted` ("ALL" or
    "since:YYYY-MM-DD") asks for and `taken` (the ledger's backlog_search) did not take
    already; None when there is nothing to ask for. Unread mail taken (UNSEEN) is \\Seen now,
    so after `unseen` the seen history is asked for: what was taken is among it, and is a
    duplicate by its Message-ID."""
    if until < 1 or taken == "ALL" or widest(taken, wanted) == taken:
        return None  # nothing wanted that was not taken
    criteria: list[Any] = [b"UID", f"1:{until}".encode()]
    if wanted.startswith("since:"):
        criteria += [b"SINCE", _day(wanted)]
    if taken == "UNSEEN":
        criteria.append(b"SEEN")
    elif taken.startswith("since:"):
        criteria += [b"BEFORE", _day(taken)]
    return criteria


def widest(taken: str, wanted: str) -> str:
    """The ledger's backlog_search once `wanted` is taken after `taken`: what both cover."""
    if "ALL" in (taken, wanted):
        return "ALL"
    if taken.startswith("since:") and wanted.startswith("since:"):
        return min(taken, wanted, key=_day)
    return wanted


def _day(search: str) -> date:
    return date.fromisoformat(search.removeprefix("since:"))


def to_take(last_uid: int, found: Iterable[int]) -> list[int]:
    """The UIDs to take, in order. "UID n:*" always includes the highest UID, even one below
    n, so the search results are filtered here."""
    return sorted({uid for uid in found if uid > last_uid})


def chunks(uids: list[int], size: int = FETCH_CHUNK) -> Iterator[list[int]]:
    for start in range(0, len(uids), size):
        yield uids[start : start + size]


def batches(
    uids: Iterable[int], sizes: Mapping[int, int], max_count: int, max_bytes: int
) -> Iterator[list[int]]:
    """At most `max_count` messages and about `max_bytes` per FETCH, so that a run of large
    messages never sits in memory at once. A single message over `max_bytes` is a batch of
    its own."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (len(batch) >= max_count or total + size > max_bytes):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch
