"""Attachment contents as files and in the database (store/attachments.py, files.py, blobs.py):
stored once, streamed in pieces, written with the message, found in either place, moved
between the two and resumed after an interruption. On SQLite and, when configured,
PostgreSQL: the place is a parameter of its own, so both places run on both backends."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailsupport.config import Settings
from mailsupport.errors import TemporaryError
from mailsupport.locks import exclusive
from mailsupport.parsing.workers import parse_safely, store_attachments
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store import attachments as places
from mailsupport.store.attachments import (
    DATABASE,
    FILES,
    MOVE_LOCK,
    attachment_store,
    move,
    place_for,
)
from mailsupport.store.blobs import BlobStore
from mailsupport.store.db import Store
from mailsupport.store.files import CHUNK_BYTES, AttachmentMissing, AttachmentStore
from mailsupport.store.models import Attachment, AttachmentBlob, AttachmentChunk
from tests.support.mailfactory import make_message

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MiB = 1024 * 1024


@pytest.fixture(params=[FILES, DATABASE])
def placed(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The test settings with attachments kept in one place or the other."""
    return settings.model_copy(update={"attachments": request.param})


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def take(settings: Settings, store: Store, *attachments: tuple[str, bytes], n: int = 1) -> None:
    """One customer message carrying `attachments`, through the real pipeline."""
    parts = [(name, "application/octet-stream", data) for name, data in attachments]
    raw = make_message(f"m{n}@customer.example.org", subject=f"files {n}", attachments=parts)
    with Pipeline(settings.model_copy(update={"parse_workers": 0}), store) as pipeline:
        outcome = pipeline.ingest(Incoming(raw, "test"), NOW)
    assert outcome.kind == "new", outcome


def read_back(settings: Settings, store: Store, digest: str) -> bytes:
    with attachment_store(settings).reading(store) as read:
        return b"".join(read(digest))


def blob_rows(store: Store) -> dict[str, int]:
    """Stored blobs and how many pieces each has."""
    with store.read() as session:
        rows = session.exec(
            select(AttachmentChunk.sha256, sa.func.count()).group_by(AttachmentChunk.sha256)
        ).all()
        heads = session.exec(select(AttachmentBlob.sha256)).all()
    pieces = dict(rows)
    return {digest: pieces.get(digest, 0) for digest in heads}


def files_of(settings: Settings) -> set[str]:
    root = settings.data_dir / "attachments"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the setting -------------------------------------------------------------------------------


def test_auto_is_the_database_on_postgresql_and_files_on_sqlite(settings: Settings) -> None:
    expected = DATABASE if settings.db_url.startswith("postgresql") else FILES
    assert place_for(settings) == expected
    assert attachment_store(settings).where == expected
    for chosen in (FILES, DATABASE):
        assert place_for(settings.model_copy(update={"attachments": chosen})) == chosen


# -- storing -----------------------------------------------------------------------------------


def test_the_same_content_is_stored_once(placed: Settings, store: Store) -> None:
    data = blob(1, 3 * MiB + 17)  # three whole pieces and a bit
    other = blob(2, 100)
    take(placed, store, ("a.bin", data), ("b.bin", data), n=1)
    take(placed, store, ("again.bin", data), ("c.bin", other), n=2)
    with store.read() as session:
        rows = session.exec(select(Attachment.sha256)).all()
    assert sorted(rows) == sorted([sha(data)] * 3 + [sha(other)])
    if placed.attachments == DATABASE:
        assert blob_rows(store) == {sha(data): 4, sha(other): 1}
        assert files_of(placed) == set()
    else:
        assert files_of(placed) == {sha(data), sha(other)}
        assert blob_rows(store) == {}
    assert read_back(placed, store, sha(data)) == data
    assert read_back(placed, store, sha(other)) == other


def test_parse_workers_store_the_files_and_the_filing_process_writes_none(
    placed: Settings, store: Store
) -> None:
    """Where new contents go to files, the parse workers write them as they parse and the
    process that files the message only checks they are there; the database place is
    written by the filing transaction alone, and no worker writes a file for it."""
    data, other = blob(3, 300_000), blob(4, 10)
    parts = [(n, "application/octet-stream", d) for n, d in (("a.bin", data), ("b.bin", other))]
    raw = make_message("w1@customer.example.org", subject="files", attachments=parts)
    with Pipeline(placed.model_copy(update={"parse_workers": 2}), store) as pipeline:

        def no_writing_here(*args: object, **kwargs: object) -> int:
            raise AssertionError("the filing process wrote an attachment file")

        if placed.attachments == FILES:
            pipeline.files.home._write = no_writing_here  # type: ignore[union-attr,method-assign]
        counts = pipeline.run([Incoming(raw, "test")], lambda: NOW)
    assert counts["new"] == 1
    with store.read() as session:
        assert sorted(session.exec(select(Attachment.sha256)).all()) == sorted(
            [sha(data), sha(other)]
        )
    if placed.attachments == FILES:
        assert files_of(placed) == {sha(data), sha(other)}
        assert blob_rows(store) == {}
    else:
        assert files_of(placed) == set()
        assert blob_rows(store) == {sha(data): 1, sha(other): 1}
    assert read_back(placed, store, sha(data)) == data


def test_a_file_a_worker_could_not_store_is_written_by_the_filing_process(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """A worker's write that fails (a full disk, say) costs nothing of the parse; a file a
    worker wrote elsewhere does not stand in for one here."""
    data = blob(5, 1000)
    raw = make_message("w2@customer.example.org", attachments=[("a.bin", "text/plain", data)])

    class Full:
        def put(self, connection: object, data: bytes) -> str:
            raise TemporaryError("cannot store an attachment: No space left on device")

    parsed = parse_safely(raw)
    store_attachments(parsed, Full())
    [part] = parsed.attachments  # type: ignore[union-attr]
    assert part.data == data
    elsewhere = AttachmentStore(tmp_path / "elsewhere")
    store_attachments(parsed, elsewhere)
    assert elsewhere.size_of(None, sha(data)) == len(data)
    files = settings.model_copy(update={"attachments": FILES})
    assert files_of(files) == set()
    with store.write() as session:  # stored elsewhere: not here, so written here
        assert attachment_store(files).put(session, data) == sha(data)
    assert files_of(files) == {sha(data)}


def test_an_empty_attachment_is_stored_and_read(placed: Settings, store: Store) -> None:
    with store.write() as session:
        digest = attachment_store(placed).put(session, b"")
    assert digest == sha(b"")
    assert read_back(placed, store, digest) == b""


def test_in_the_database_a_message_and_its_attachments_commit_together(
    settings: Settings, store: Store
) -> None:
    """A property files cannot give: the transaction that fails takes its attachments."""
    data = blob(3, 2 * MiB)
    for where in (DATABASE, FILES):
        chosen = settings.model_copy(update={"attachments": where})
        with pytest.raises(RuntimeError), store.write() as session:
            attachment_store(chosen).put(session, data)
            raise RuntimeError("the message failed after its attachments were written")
    assert blob_rows(store) == {}  # rolled back with the rest
    assert files_of(settings) == {sha(data)}  # the file stays, unused


def test_a_large_attachment_goes_in_and_out_a_piece_at_a_time(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    """30 MB: never copied whole, neither when it is stored (the pieces are views of the
    bytes the message already holds) nor when it is read back into a file."""
    data = blob(4, 30 * MiB)
    digest = sha(data)
    blobs = BlobStore()
    tracemalloc.start()
    try:
        with store.write() as session:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            assert blobs.put(session, data) == digest
            stored_peak = tracemalloc.get_traced_memory()[1] - before
        check = hashlib.sha256()
        with store.read() as session, (tmp_path / "out").open("wb") as out:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            for piece in blobs.chunks(session.connection(), digest):
                assert len(piece) <= CHUNK_BYTES
                check.update(piece)
                out.write(piece)
            read_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert check.hexdigest() == digest
    assert (tmp_path / "out").stat().st_size == len(data)
    # A few pieces in flight at most; a whole copy would be 30 MiB.
    assert stored_peak < 6 * MiB, stored_peak
    assert read_peak < 6 * MiB, read_peak
    with store.read() as session:
        lengths = session.exec(
            select(sa.func.length(AttachmentChunk.data)).order_by(AttachmentChunk.seq)
        ).all()
        head = session.get(AttachmentBlob, digest)
    assert lengths == [CHUNK_BYTES] * 30
    assert head is not None and (head.size, head.chunks) == (len(data), 30)


@pytest.mark.parametrize("first_commits", [True, False])
@pytest.mark.parametrize("pieces", [3, 1])  # 1: small content, sent without asking
def test_two_writers_racing_on_the_same_content(
    store: Store, first_commits: bool, pieces: int
) -> None:
    """Two daemons store the same new content at the same moment, each in its own
    transaction (no writers' lock here, unlike Store.write on PostgreSQL): the second waits
    for the first, then stores nothing (it committed) or everything (it rolled back)."""
    data = blob(5, 2 * MiB + 5 if pieces == 3 else 5000)
    digest = sha(data)
    blobs = BlobStore()
    writers = store.engine.execution_options(mailsupport_write=True)  # BEGIN IMMEDIATE on SQLite
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            with writers.begin() as conn, Session(conn) as session:
                outcome["digest"] = blobs.put(session, data)
        except BaseException as error:  # reported below, in the test's thread
            outcome["error"] = error

    with writers.connect() as first:
        with first.begin() as transaction:
            assert blobs.put(Session(first), data) == digest
            racer = threading.Thread(target=second)
            racer.start()
            time.sleep(0.5)
            assert racer.is_alive(), "the second writer did not wait for the first"
            if not first_commits:
                transaction.rollback()
        racer.join(30)
    assert not racer.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["digest"] == digest
    assert blob_rows(store) == {digest: pieces}
    with store.read() as session:
        assert b"".join(blobs.chunks(session.connection(), digest)) == data


# -- reading wherever it is ------------------------------------------------------------------


def test_reading_finds_an_attachment_in_the_other_place(placed: Settings, store: Store) -> None:
    data = blob(6, 1000)
    other = DATABASE if placed.attachments == FILES else FILES
    take(placed.model_copy(update={"attachments": other}), store, ("x.bin", data))
    assert read_back(placed, store, sha(data)) == data
    with pytest.raises(AttachmentMissing, match="neither as a file nor in the database"):
        read_back(placed, store, sha(b"never stored"))


# -- moving ----------------------------------------------------------------------------------

CONTENTS = [blob(10, 2 * MiB + 1), b"", blob(11, 10), blob(12, MiB), blob(13, 5000)]


def desk_with_files(settings: Settings, store: Store, where: str) -> None:
    chosen = settings.model_copy(update={"attachments": where})
    for n, data in enumerate(CONTENTS):
        take(chosen, store, (f"f{n}.bin", data), n=n)


def stored_in(settings: Settings, store: Store) -> dict[str, set[str]]:
    return {FILES: files_of(settings), DATABASE: set(blob_rows(store))}


def all_readable(settings: Settings, store: Store) -> None:
    for where in (FILES, DATABASE):
        chosen = settings.model_copy(update={"attachments": where})
        for data in CONTENTS:
            assert read_back(chosen, store, sha(data)) == data


@pytest.mark.parametrize("to", [DATABASE, FILES])
def test_a_move_stopped_half_way_goes_on_when_run_again(
    settings: Settings, store: Store, to: str
) -> None:
    source = FILES if to == DATABASE else DATABASE
    desk_with_files(settings, store, source)
    everything = {sha(data) for data in CONTENTS}
    assert stored_in(settings, store)[source] == everything

    done: list[str] = []

    def stop_after_two(digest: str, what: str) -> None:
        done.append(digest)
        if len(done) == 2:
            raise KeyboardInterrupt  # Ctrl-C between two contents

    with pytest.raises(KeyboardInterrupt):
        move(settings, store, to, delete_source=True, each=stop_after_two)
    half = stored_in(settings, store)
    assert half[to] == set(done)
    assert half[source] == everything - set(done)  # moved ones removed, the rest untouched
    all_readable(settings, store)  # a daemon reads every one of them meanwhile

    again = move(settings, store, to, delete_source=True)
    assert (again.copied, again.present, again.removed) == (3, 0, 3)
    assert again.bytes == sum(len(d) for d in CONTENTS if sha(d) not in done)
    assert (again.damaged, again.missing) == ([], [])
    assert stored_in(settings, store) == {to: everything, source: set()}
    all_readable(settings, store)


@pytest.mark.parametrize("to", [DATABASE, FILES])
def test_a_move_stopped_inside_one_content_leaves_no_part_of_it(
    settings: Settings, store: Store, to: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_class = AttachmentStore if to == DATABASE else BlobStore
    desk_with_files(settings, store, FILES if to == DATABASE else DATABASE)
    big = sha(CONTENTS[0])
    real = source_class.chunks

    def cut(self: object, connection: sa.Connection, digest: str) -> Iterator[bytes]:
        pieces = real(self, connection, digest)  # type: ignore[arg-type]
        if digest != big:
            return pieces

        def first_then_stop() -> Iterator[bytes]:
            yield next(pieces)
            raise KeyboardInterrupt  # killed with the first MiB written

        return first_then_stop()

    monkeypatch.setattr(source_class, "chunks", cut)
    with pytest.raises(KeyboardInterrupt):
        move(settings, store, to)
    assert big not in stored_in(settings, store)[to]
    root = settings.data_dir / "attachments"
    assert [p for p in root.rglob(".tmp-*")] == []  # no partial file under any name
    monkeypatch.setattr(source_class, "chunks", real)
    again = move(settings, store, to)
    assert stored_in(settings, store)[to] == {sha(d) for d in CONTENTS}
    assert again.copied >= 1


def test_a_damaged_file_is_not_moved_nor_removed(settings: Settings, store: Store) -> None:
    desk_with_files(settings, store, FILES)
    victim = sha(CONTENTS[2])
    path = AttachmentStore(settings.data_dir / "attachments").path_for(victim)
    path.write_bytes(b"something else")
    moved = move(settings, store, DATABASE, delete_source=True)
    assert moved.damaged == [victim]
    assert path.read_bytes() == b"something else"  # kept, for whoever looks into it
    assert victim not in blob_rows(store)
    assert moved.copied == len(CONTENTS) - 1


def test_a_move_reports_attachments_stored_nowhere(settings: Settings, store: Store) -> None:
    desk_with_files(settings, store, FILES)
    lost = sha(CONTENTS[3])
    AttachmentStore(settings.data_dir / "attachments").path_for(lost).unlink()
    moved = move(settings, store, DATABASE)
    assert moved.missing == [lost]
    assert moved.copied == len(CONTENTS) - 1


def test_one_move_at_a_time(settings: Settings, store: Store) -> None:
    with exclusive(store, MOVE_LOCK, settings.data_dir / "locks") as held:
        assert held
        with pytest.raises(TemporaryError, match="another move"):
            move(settings, store, DATABASE)


def test_moves_list_digests_a_page_at_a_time(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(places, "PAGE", 2)
    desk_with_files(settings, store, FILES)
    assert move(settings, store, DATABASE, delete_source=True).copied == len(CONTENTS)
    assert move(settings, store, FILES, delete_source=True).copied == len(CONTENTS)
    assert stored_in(settings, store) == {FILES: {sha(d) for d in CONTENTS}, DATABASE: set()}
