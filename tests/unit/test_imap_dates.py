"""When history taken over IMAP was written (sources/imap.py Fetched.written_at): its Date,
unless INTERNALDATE is earlier or the Date is missing or unreadable. No server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailsupport.sources.imap import Fetched
from tests.support.mailfactory import make_message

WRITTEN = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
COPIED = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)  # APPENDed to the server that day


def test_mail_copied_to_the_server_later_is_dated_by_its_date() -> None:
    raw = make_message(date=WRITTEN).replace(b"\n", b"\r\n")
    assert Fetched(1, raw, COPIED).written_at() == WRITTEN


def test_a_sender_clock_ahead_of_the_server_gives_way_to_internaldate() -> None:
    raw = make_message(date=COPIED + timedelta(days=3))
    assert Fetched(1, raw, COPIED).written_at() == COPIED


def test_no_readable_date_falls_back_to_internaldate() -> None:
    assert Fetched(1, make_message(date=None), COPIED).written_at() == COPIED
    garbled = make_message(date=None).replace(b"Subject:", b"Date: sometime soon\r\nSubject:")
    assert Fetched(1, garbled, COPIED).written_at() == COPIED
    assert Fetched(1, b"\x00\x01 junk", None).written_at() is None


def test_only_the_header_block_is_read() -> None:
    raw = make_message(date=None, body="Date: Sat, 01 Mar 2025 09:30:00 +0000")
    assert Fetched(1, raw, COPIED).written_at() == COPIED
