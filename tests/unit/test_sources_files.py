"""Tests for the local intake adapter: mbox, Maildir, message files, directory trees."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailsupport.errors import SourceError
from mailsupport.sources.files import ImportPlan, MboxFile, RawItem, checksum, plan_import

MSG_A = b"From: alice@example.com\nSubject: one\nMessage-ID: <a@x>\n\nHello\n"
MSG_B = b"From: bob@example.com\nSubject: two\nMessage-ID: <b@x>\n\nBody of two\n"
MSG_C = b"Return-Path: <c@example.com>\nFrom: c@example.com\nSubject: three\n\nThree\n"


def items(plan: ImportPlan) -> list[RawItem]:
    return list(plan)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


# --- mbox -------------------------------------------------------------------------------------


def test_mbox_three_messages_with_mboxrd_quoting(tmp_path: Path) -> None:
    quoted_body = b"From: c@example.com\nSubject: quoted\n\n>From the start\n>>From kept once\n"
    box = write(
        tmp_path / "box.mbox",
        b"From alice@example.com Mon Jan  1 00:00:00 2024\n"
        + MSG_A
        + b"\n"
        + b"From bob@example.com Tue Feb 13 14:15:16 2024\n"
        + MSG_B
        + b"\n"
        + b"From MAILER-DAEMON Wed Mar  6 07:08:09 2024\n"
        + quoted_body
        + b"\n",
    )
    plan = plan_import([box])
    got = items(plan)

    assert len(plan) == 3 == len(got)
    assert [i.origin for i in got] == [f"{box}#1", f"{box}#2", f"{box}#3"]
    assert got[0].raw == MSG_A
    assert got[1].raw == MSG_B
    # One level of ">" comes off; the separator line is not part of the message.
    assert got[2].raw == (
        b"From: c@example.com\nSubject: quoted\n\nFrom the start\n>From kept once\n"
    )
    assert got[0].received_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert got[1].received_at == datetime(2024, 2, 13, 14, 15, 16, tzinfo=UTC)
    assert got[2].received_at == datetime(2024, 3, 6, 7, 8, 9, tzinfo=UTC)
    assert plan.skipped == []


def test_crlf_mbox_keeps_crlf_bytes(tmp_path: Path) -> None:
    one = b"From: a@example.com\r\nSubject: one\r\n\r\nline\r\n>From quoted\r\n"
    two = b"From: b@example.com\r\nSubject: two\r\n\r\nbye\r\n"
    box = write(
        tmp_path / "crlf.mbox",
        b"From a@example.com Mon Jan  1 10:00:00 2024\r\n"
        + one
        + b"\r\n"
        + b"From b@example.com Mon Jan  1 11:00:00 2024\r\n"
        + two
        + b"\r\n",
    )
    got = items(plan_import([box]))

    assert [i.raw for i in got] == [
        b"From: a@example.com\r\nSubject: one\r\n\r\nline\r\nFrom quoted\r\n",
        two,
    ]
    assert got[1].received_at == datetime(2024, 1, 1, 11, tzinfo=UTC)


def test_mbox_with_bom_leading_blank_line_and_gmail_from_line(tmp_path: Path) -> None:
    box = write(
        tmp_path / "takeout",  # no extension: detected by content
        b"\xef\xbb\xbf\nFrom 1782384573917450238@xxx Tue Nov 14 12:00:00 +0100 2023\n" + MSG_A,
    )
    (item,) = items(plan_import([box]))

    assert item.raw == MSG_A
    assert item.received_at == datetime(2023, 11, 14, 11, 0, tzinfo=UTC)


def test_unparseable_from_line_date_gives_none(tmp_path: Path) -> None:
    box = write(tmp_path / "box", b"From someone\n" + MSG_A)
    (item,) = items(plan_import([box]))
    assert item.raw == MSG_A
    assert item.received_at is None


def test_unquoted_from_in_body_does_not_split(tmp_path: Path) -> None:
    # mboxo written by a careless program: a body line starting "From " after a blank line.
    body = b"From: a@example.com\nSubject: s\n\nHi\n\nFrom here on, we ship on Mondays.\n"
    box = write(tmp_path / "box", b"From a@example.com Mon Jan  1 00:00:00 2024\n" + body)
    plan = plan_import([box])
    assert [i.raw for i in plan] == [body]
    assert len(plan) == 1


def test_corrupt_mbox_yields_what_is_readable(tmp_path: Path) -> None:
    garbage = b"\x00\x01 not a message at all \xff\n"
    truncated = b"From: c@example.com\nSubject: cut off\n\nThis message was trun"
    box = write(
        tmp_path / "broken.mbox",
        b"From a@example.com Mon Jan  1 00:00:00 2024\n"
        + MSG_A
        + b"\nFrom empty@example.com Mon Jan  1 00:00:01 2024\n"
        + b"\nFrom junk@example.com Mon Jan  1 00:00:02 2024\n"
        + garbage
        + b"\nFrom c@example.com Mon Jan  1 00:00:03 2024\n"
        + truncated,
    )
    plan = plan_import([box])
    got = items(plan)

    # The empty chunk is skipped and noted; the garbage chunk is handed on (the pipeline
    # quarantines it, keeping the bytes); the truncated tail still comes out.
    assert [(i.origin, i.raw) for i in got] == [
        (f"{box}#1", MSG_A),
        (f"{box}#3", garbage),
        (f"{box}#4", truncated),
    ]
    assert len(plan) == 3
    assert plan.skipped == [(f"{box}#2", "empty message in mbox")]  # noted once, not twice


def test_len_before_iteration_matches_and_notes_once(tmp_path: Path) -> None:
    box = write(
        tmp_path / "box",
        b"From a Mon Jan  1 00:00:00 2024\n\nFrom b Mon Jan  1 00:00:00 2024\n" + MSG_B,
    )
    plan = plan_import([box])
    assert len(plan) == 1
    assert plan.skipped == [(f"{box}#1", "empty message in mbox")]
    assert [i.raw for i in plan] == [MSG_B]
    assert len(plan.skipped) == 1


def test_message_file_with_from_line_is_one_message_mbox(tmp_path: Path) -> None:
    saved = write(tmp_path / "saved.eml", b"From a@example.com Mon Jan  1 00:00:00 2024\n" + MSG_A)
    (item,) = items(plan_import([saved]))
    assert item.raw == MSG_A
    assert item.origin == f"{saved}#1"


# --- single message files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["msg.eml", "1234", "1234.host:2,S"],
)
def test_single_message_file_bytes_exact(tmp_path: Path, name: str) -> None:
    data = b"X-Spam-Score: 0\r\nReceived: from x\r\n by y\r\n" + MSG_A.replace(b"\n", b"\r\n")
    path = write(tmp_path / name, data)
    plan = plan_import([path])
    (item,) = items(plan)
    assert item == RawItem(origin=str(path), raw=data, received_at=None)
    assert len(plan) == 1


# --- Maildir ------------------------------------------------------------------------------------


def test_maildir_with_subfolder_and_bookkeeping(tmp_path: Path) -> None:
    md = make_maildir(tmp_path / "Maildir")
    write(md / "cur" / "1700000200.M2P2.host,S=99:2,S", MSG_B)
    write(md / "new" / "1700000100.M1P1.host", MSG_A)
    write(md / "new" / "1700000300.M3P3.host", b"")  # zero-length
    write(md / "tmp" / "1700000400.M4P4.host", b"From: half-deliver")
    write(md / "dovecot-uidlist", b"3 V1700000000 N4\n1 1700000100.M1P1.host\n")
    write(md / "dovecot.index.cache", b"\x00\x01binary")
    write(md / "maildirsize", b"0S,0C\n")
    write(md / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    sent = make_maildir(md / ".Sent")
    write(sent / "maildirfolder", b"")
    write(sent / "cur" / "1600000000.M9P9.host:2,S", MSG_C)
    make_maildir(md / ".Archive.2023")  # empty folder: fine

    plan = plan_import([md])
    got = items(plan)

    # cur/ and new/ merged by file name (= delivery time), then the Maildir++ subfolders.
    assert [i.origin for i in got] == [
        f"{md}/new/1700000100.M1P1.host",
        f"{md}/cur/1700000200.M2P2.host,S=99:2,S",
        f"{md}/.Sent/cur/1600000000.M9P9.host:2,S",
    ]
    assert [i.raw for i in got] == [MSG_A, MSG_B, MSG_C]
    assert got[0].received_at == datetime.fromtimestamp(1700000100, UTC)
    assert got[2].received_at == datetime.fromtimestamp(1600000000, UTC)
    assert len(plan) == 3
    skipped = dict(plan.skipped)
    assert skipped[f"{md}/new/1700000300.M3P3.host"] == "empty file"
    assert "still being delivered" in skipped[f"{md}/tmp/1700000400.M4P4.host"]
    for name in ("dovecot-uidlist", "dovecot.index.cache", "maildirsize", ".DS_Store"):
        assert f"{md}/{name}" in skipped
    assert f"{sent}/maildirfolder" in skipped


def test_explicit_maildir_file_gets_time_from_name(tmp_path: Path) -> None:
    md = make_maildir(tmp_path / "Maildir")
    path = write(md / "cur" / "1700000000.M1P1.host:2,S", MSG_A)
    (item,) = items(plan_import([path]))
    assert item.received_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


# --- directory trees ----------------------------------------------------------------------------


def test_directory_tree(tmp_path: Path) -> None:
    root = tmp_path / "export"
    write(root / "b.eml", MSG_B)
    write(root / "a.eml", MSG_A)
    write(root / "mh" / "1", MSG_A)
    write(root / "mh" / "10", MSG_B)
    write(root / "mh" / "2", MSG_C)
    write(root / "mh" / ".mh_sequences", b"unseen: 1-2\n")
    write(
        root / "mh" / "old.mbox",
        b"From x Mon Jan  1 00:00:00 2024\n"
        + MSG_C
        + b"\nFrom y Mon Jan  1 00:00:00 2024\n"
        + MSG_A,
    )
    nested = make_maildir(root / "nested" / "Maildir")
    write(nested / "new" / "1700000000.X.host", MSG_B)
    write(root / "Inbox.msf", b'// <!-- <mdb:mork:z v="1.4"/> -->\n')
    write(root / ".git" / "HEAD", b"ref: refs/heads/main\n")
    (root / "link.eml").symlink_to(root / "a.eml")
    (root / "outside").symlink_to(tmp_path)
    os.mkfifo(root / "pipe")

    plan = plan_import([root])
    got = items(plan)

    assert [i.origin for i in got] == [
        f"{root}/a.eml",
        f"{root}/b.eml",
        f"{root}/mh/1",
        f"{root}/mh/10",
        f"{root}/mh/2",
        f"{root}/mh/old.mbox#1",
        f"{root}/mh/old.mbox#2",
        f"{root}/nested/Maildir/new/1700000000.X.host",
    ]
    assert [i.raw for i in got] == [MSG_A, MSG_B, MSG_A, MSG_B, MSG_C, MSG_C, MSG_A, MSG_B]
    assert got[2].received_at is None  # MH numbers are not timestamps
    assert got[-1].received_at == datetime.fromtimestamp(1700000000, UTC)
    assert len(plan) == len(got)
    skipped = dict(plan.skipped)
    assert skipped[f"{root}/link.eml"].startswith("symbolic link")
    assert skipped[f"{root}/outside"].startswith("symbolic link")
    assert skipped[f"{root}/pipe"] == "not a regular file"
    assert skipped[f"{root}/.git"] == "hidden directory"
    assert skipped[f"{root}/mh/.mh_sequences"] == "hidden file"
    assert f"{root}/Inbox.msf" in skipped


def test_same_file_twice_is_imported_once(tmp_path: Path) -> None:
    md = make_maildir(tmp_path / "Maildir")
    sent = make_maildir(md / ".Sent")
    path = write(sent / "cur" / "1.x:2,S", MSG_A)
    plan = plan_import([md, sent])
    assert [i.raw for i in plan] == [MSG_A]
    assert (str(sent / "cur" / "1.x:2,S"), f"same file as {path}") in plan.skipped


def test_explicit_empty_file_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.eml", b"")
    plan = plan_import([path])
    assert items(plan) == []
    assert len(plan) == 0
    assert plan.skipped == [(str(path), "empty file")]


# --- errors -------------------------------------------------------------------------------------


def test_binary_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "x.bin", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00")
    with pytest.raises(SourceError, match=r"not an mbox or a message file: .*x\.bin.*NUL"):
        plan_import([path])


def test_text_file_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", b"Buy milk\nand eggs\n")
    with pytest.raises(SourceError) as info:
        plan_import([path])
    assert str(info.value) == (
        f'not an mbox or a message file: {path} (first line is not a header or "From " line)'
    )


def test_from_line_not_followed_by_header_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "letter.txt", b"From the desk of the CEO\nDear all,\n")
    with pytest.raises(SourceError, match=r"letter\.txt"):
        plan_import([path])


def test_compressed_mbox_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "box.mbox.gz", b"\x1f\x8b\x08\x00rest")
    with pytest.raises(SourceError, match=r"box\.mbox\.gz \(gzip-compressed"):
        plan_import([path])


def test_bad_file_inside_walked_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "dir" / "a.eml", MSG_A)
    write(tmp_path / "dir" / "sub" / "photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    with pytest.raises(SourceError, match=r"sub/photo\.jpg"):
        plan_import([tmp_path / "dir"])


def test_nonexistent_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.mbox"
    with pytest.raises(SourceError) as info:
        plan_import([path])
    assert str(info.value) == f"cannot read {path}: No such file or directory"


def test_path_under_a_file_cannot_be_read(tmp_path: Path) -> None:
    # Fails for root too, unlike chmod 000.
    write(tmp_path / "file.eml", MSG_A)
    path = tmp_path / "file.eml" / "child"
    with pytest.raises(SourceError) as info:
        plan_import([path])
    assert str(info.value) == f"cannot read {path}: Not a directory"


def test_broken_symlink_given_explicitly(tmp_path: Path) -> None:
    link = tmp_path / "dangling.eml"
    link.symlink_to(tmp_path / "gone.eml")
    with pytest.raises(SourceError, match=f"cannot read {link}: No such file or directory"):
        plan_import([link])


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Turn a blocking open() into a test failure instead of a hung test run."""

    def alarm(signum: int, frame: object) -> None:
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("no_hang")
def test_fifo_given_explicitly_is_refused_without_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "mail.fifo"
    os.mkfifo(fifo)
    with pytest.raises(SourceError) as info:
        plan_import([fifo])
    assert str(info.value) == f"cannot read {fifo}: not a regular file or directory"


# --- validation before anything is yielded, and failures while reading ---------------------------


def test_good_and_bad_path_yield_nothing(tmp_path: Path) -> None:
    good = write(tmp_path / "good.eml", MSG_A)
    bad = write(tmp_path / "bad.bin", b"\x00\x00\x00")
    yielded: list[RawItem] = []
    with pytest.raises(SourceError, match=r"bad\.bin"):
        for item in plan_import([good, bad]):
            yielded.append(item)
    assert yielded == []


def test_bad_file_deep_in_a_tree_stops_the_good_mbox_before_it(tmp_path: Path) -> None:
    good = write(tmp_path / "a" / "box.mbox", b"From x Mon Jan  1 00:00:00 2024\n" + MSG_A)
    write(tmp_path / "z" / "deep" / "junk", b"\x89PNG\r\n\x1a\n\x00\x00")
    yielded: list[RawItem] = []
    with pytest.raises(SourceError, match="junk"):
        for item in plan_import([good, tmp_path / "z"]):
            yielded.append(item)
    assert yielded == []


def test_iteration_is_lazy_and_a_vanished_file_is_a_source_error(tmp_path: Path) -> None:
    first = write(tmp_path / "1.eml", MSG_A)
    second = write(tmp_path / "2.eml", MSG_B)
    it = iter(plan_import([first, second]))
    assert next(it).raw == MSG_A
    second.unlink()  # e.g. a mail client moved it while we were importing
    with pytest.raises(SourceError) as info:
        next(it)
    assert str(info.value) == f"cannot read {second}: No such file or directory"
    assert not isinstance(info.value, OSError)


def test_vanished_mbox_is_a_source_error(tmp_path: Path) -> None:
    box = write(tmp_path / "box", b"From x Mon Jan  1 00:00:00 2024\n" + MSG_A)
    plan = plan_import([box])
    box.unlink()
    with pytest.raises(SourceError, match=f"cannot read {box}: No such file or directory"):
        len(plan)
    with pytest.raises(SourceError, match=f"cannot read {box}"):
        items(plan)


def test_file_replaced_by_fifo_after_planning_is_refused(tmp_path: Path, no_hang: None) -> None:
    path = write(tmp_path / "msg.eml", MSG_A)
    plan = plan_import([path])
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(SourceError, match=f"cannot read {path}: not a regular file"):
        items(plan)


def test_a_message_moved_from_new_to_cur_during_import_is_still_read(tmp_path: Path) -> None:
    """A mail client reading the Maildir renames new/X to cur/X:2,S while we import."""
    box = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    raw = b"Subject: moved\r\nMessage-ID: <mv@x>\r\n\r\nbody\r\n"
    (box / "new" / "1700000000.M1P2.host").write_bytes(raw)
    plan = plan_import([box])
    (box / "new" / "1700000000.M1P2.host").rename(box / "cur" / "1700000000.M1P2.host:2,S")
    [item] = list(plan)
    assert item.raw == raw
    assert item.origin.endswith("cur/1700000000.M1P2.host:2,S")


# --- reading an mbox from where an earlier import stopped --------------------------------------


def three_message_mbox(path: Path, prefix: bytes = b"") -> Path:
    return write(
        path,
        prefix
        + b"From alice@example.com Mon Jan  1 00:00:00 2024\n"
        + MSG_A
        + b"\nFrom bob@example.com Tue Feb 13 14:15:16 2024\n"
        + MSG_B
        + b"\nFrom c@example.com Wed Mar  6 07:08:09 2024\n"
        + MSG_C,
    )


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf\n\n"], ids=["plain", "bom-and-blanks"])
def test_an_mbox_read_from_the_end_of_any_message_goes_on_with_the_next(
    tmp_path: Path, prefix: bytes
) -> None:
    box = three_message_mbox(tmp_path / "box.mbox", prefix)
    (source,) = plan_import([box]).sources
    assert isinstance(source, MboxFile)
    whole = list(source.messages())
    assert [i.number for i in whole] == [1, 2, 3]
    assert whole[-1].end == box.stat().st_size
    data = box.read_bytes()
    for done, item in enumerate(whole, 1):
        assert data[item.end :].startswith(b"From ") or item.end == len(data)
        assert list(source.messages(item.end, item.number)) == whole[done:]
        assert checksum(box, item.end) is not None


def test_the_checksum_holds_for_appended_mail_and_fails_for_an_edited_or_short_file(
    tmp_path: Path,
) -> None:
    box = three_message_mbox(tmp_path / "box.mbox")
    (source,) = plan_import([box]).sources
    assert isinstance(source, MboxFile)
    first, second, _ = source.messages()
    before = checksum(box, second.end)
    assert before is not None and checksum(box, second.end) == before
    assert checksum(box, first.end) != before

    with box.open("ab") as f:  # appended, with the blank line the last message lacked
        f.write(b"\nFrom d@example.com Thu Mar  7 07:08:09 2024\n" + MSG_A)
    assert checksum(box, second.end) == before
    assert checksum(box, box.stat().st_size - len(MSG_A)) is None  # inside a message

    edited = box.read_bytes().replace(b"Hello", b"Hullo")  # the same length, before the offset
    box.write_bytes(edited)
    assert checksum(box, second.end) not in (before, None)
    box.write_bytes(edited[: second.end - 1])
    assert checksum(box, second.end) is None
