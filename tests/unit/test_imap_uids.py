"""Which UIDs the IMAP source takes and in what batches (sources/uids.py): no server."""

from __future__ import annotations

from datetime import date

import pytest

from mailsupport.sources.uids import (
    Start,
    batches,
    chunks,
    history_search,
    searches,
    start_from,
    to_take,
    widest,
)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("new", Start(41, 41, "")),  # what is there is history, none of it taken
        ("unseen", Start(0, 41, "UNSEEN")),
        ("all", Start(0, 41, "ALL")),
        ("since:2026-01-31", Start(0, 41, "since:2026-01-31")),
    ],
)
def test_the_first_poll_starts_where_imap_start_says(start: str, expected: Start) -> None:
    assert start_from(start, uidnext=42) == expected


def test_an_empty_folder_has_no_backlog() -> None:
    assert start_from("all", uidnext=1) == Start(0, 0, "ALL")
    assert searches(0, 0, "ALL") == [[b"UID", b"1:*"]]


def test_backlog_is_searched_with_its_filter_then_everything_after_it() -> None:
    assert searches(0, 41, "UNSEEN") == [[b"UID", b"1:41", b"UNSEEN"], [b"UID", b"42:*"]]
    assert searches(0, 41, "ALL") == [[b"UID", b"1:41"], [b"UID", b"42:*"]]
    assert searches(3, 41, "since:2026-01-31") == [
        [b"UID", b"4:41", b"SINCE", date(2026, 1, 31)],
        [b"UID", b"42:*"],
    ]


def test_a_backlog_already_taken_is_not_searched_again() -> None:
    assert searches(41, 41, "UNSEEN") == [[b"UID", b"42:*"]]
    assert searches(50, 41, "ALL") == [[b"UID", b"51:*"]]


def test_uid_star_includes_the_highest_uid_even_below_the_range_so_it_is_filtered() -> None:
    # RFC 3501: "UID 51:*" on a folder whose highest UID is 50 answers 50.
    assert to_take(50, [50]) == []
    assert to_take(50, [53, 51, 50, 53, 52]) == [51, 52, 53]


def test_batches_stop_at_the_count_or_the_byte_budget_whichever_comes_first() -> None:
    uids = list(range(1, 8))
    sizes = dict.fromkeys(uids, 10)
    assert list(batches(uids, sizes, max_count=3, max_bytes=1000)) == [[1, 2, 3], [4, 5, 6], [7]]
    assert list(batches(uids, sizes, max_count=100, max_bytes=25)) == [
        [1, 2], [3, 4], [5, 6], [7],
    ]  # fmt: skip


def test_a_message_over_the_byte_budget_is_a_batch_of_its_own() -> None:
    sizes = {1: 5, 2: 500, 3: 5}
    assert list(batches([1, 2, 3], sizes, max_count=10, max_bytes=100)) == [[1], [2], [3]]


def test_unknown_sizes_count_as_nothing() -> None:
    assert list(batches([1, 2, 3], {}, max_count=2, max_bytes=1)) == [[1, 2], [3]]


def test_chunks_split_in_order() -> None:
    assert list(chunks(list(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(chunks([], 3)) == []


def test_a_first_poll_of_new_mail_only_searches_nothing_of_the_history() -> None:
    assert searches(*start_from("new", uidnext=42)) == [[b"UID", b"42:*"]]


def test_history_asks_for_what_was_wanted_and_not_taken_before() -> None:
    assert history_search(41, "", "ALL") == [b"UID", b"1:41"]
    assert history_search(41, "", "since:2026-01-31") == [
        b"UID", b"1:41", b"SINCE", date(2026, 1, 31),
    ]  # fmt: skip
    assert history_search(41, "since:2026-01-31", "ALL") == [
        b"UID", b"1:41", b"BEFORE", date(2026, 1, 31),
    ]  # fmt: skip
    assert history_search(41, "since:2026-01-31", "since:2025-06-01") == [
        b"UID", b"1:41", b"SINCE", date(2025, 6, 1), b"BEFORE", date(2026, 1, 31),
    ]  # fmt: skip
    # Unread mail that was taken is \Seen now: the seen mail holds the rest (and duplicates).
    assert history_search(41, "UNSEEN", "ALL") == [b"UID", b"1:41", b"SEEN"]


def test_no_history_to_ask_for_when_all_was_taken_or_the_folder_was_empty() -> None:
    assert history_search(41, "ALL", "ALL") is None
    assert history_search(41, "ALL", "since:2026-01-31") is None
    assert history_search(0, "", "ALL") is None  # empty at the first poll (or a ledger so old
    # that it never recorded where its history ends)


@pytest.mark.parametrize(
    ("taken", "wanted", "after"),
    [
        ("", "ALL", "ALL"),
        ("", "since:2026-01-31", "since:2026-01-31"),
        ("since:2026-01-31", "since:2025-06-01", "since:2025-06-01"),
        ("since:2025-06-01", "since:2026-01-31", "since:2025-06-01"),  # nothing new is wanted
        ("since:2026-01-31", "ALL", "ALL"),
        ("ALL", "since:2026-01-31", "ALL"),
        ("UNSEEN", "since:2026-01-31", "since:2026-01-31"),
    ],
)
def test_after_a_takeover_the_ledger_covers_what_both_took(
    taken: str, wanted: str, after: str
) -> None:
    assert widest(taken, wanted) == after


def test_a_takeover_twice_asks_for_nothing_the_second_time() -> None:
    for wanted in ("ALL", "since:2026-01-31"):
        assert history_search(41, widest("", wanted), wanted) is None
    assert history_search(41, "since:2025-06-01", "since:2026-01-31") is None
