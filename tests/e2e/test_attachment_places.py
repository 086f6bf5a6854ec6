"""The commands on attachments kept in the database: `attachments --save` streaming them out,
`reply --attach` storing ours there, and `db move-attachments` in both directions, also
SIGKILLed at random moments and run again. SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.attachments import attachment_store
from mailsupport.store.db import Store
from mailsupport.store.models import Attachment, AttachmentBlob, AttachmentChunk
from tests.support.cli import Run, cli
from tests.support.faults import Forkserver
from tests.support.faults import Run as ForkRun
from tests.support.mailfactory import make_message

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MiB = 1024 * 1024
IN_DATABASE = {"MAILSUPPORT_ATTACHMENTS": "database"}
AS_FILES = {"MAILSUPPORT_ATTACHMENTS": "files"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ingest(run: Run, env: dict[str, str], n: int, *files: tuple[str, bytes]) -> str:
    parts = [(name, "application/octet-stream", data) for name, data in files]
    raw = make_message(f"p{n}@customer.example.org", subject=f"files {n}", attachments=parts)
    result = run("ingest", input=raw, env=env)
    assert result.exit_code == 0, result.output
    return re.search(r"ticket #(\d+)", result.output)[1]  # type: ignore[index]


def files_of(settings: Settings) -> set[str]:
    root = settings.data_dir / "attachments"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def blobs_of(store: Store) -> set[str]:
    with store.read() as session:
        return set(session.exec(select(AttachmentBlob.sha256)).all())


def test_attachments_are_saved_from_the_database(
    run: Run, settings: Settings, store: Store, tmp_path: Path
) -> None:
    big = random.Random(1).randbytes(3 * MiB + 100)  # four pieces
    small = b"%PDF-1.4 invoice"
    number = ingest(run, IN_DATABASE, 1, ("dump.bin", big), ("invoice.pdf", small))
    assert blobs_of(store) == {sha(big), sha(small)}
    assert files_of(settings) == set()  # nothing under DATA_DIR: the database is enough

    out = tmp_path / "out"
    saved = run("attachments", number, "--save", str(out), "--json", env=IN_DATABASE)
    assert saved.exit_code == 0, saved.output
    assert {Path(p["saved_as"]).name for p in json.loads(saved.output)} == {
        "dump.bin",
        "invoice.pdf",
    }
    assert (out / "dump.bin").read_bytes() == big
    assert (out / "invoice.pdf").read_bytes() == small

    # Read the other way round too: the setting says files, the content is found anyway.
    again = run("attachments", number, "--save", str(tmp_path / "again"), env=AS_FILES)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "dump.bin").read_bytes() == big


def test_a_blob_missing_pieces_is_reported_and_not_saved(
    run: Run, store: Store, tmp_path: Path
) -> None:
    data = random.Random(2).randbytes(2 * MiB + 1)
    number = ingest(run, IN_DATABASE, 1, ("dump.bin", data), ("ok.txt", b"fine"))
    with store.engine.begin() as conn:  # damage: its last piece is lost
        chunks = AttachmentChunk.__table__  # type: ignore[attr-defined]
        conn.execute(chunks.delete().where(chunks.c.sha256 == sha(data), chunks.c.seq == 2))
    out = tmp_path / "out"
    result = run("attachments", number, "--save", str(out), env=IN_DATABASE)
    assert result.exit_code == 1
    assert "dump.bin not saved" in result.stderr and "2 of its 3 pieces" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ok.txt"]  # no half file left


def test_our_reply_with_an_attachment_is_kept_in_the_database(
    smtp_env: dict[str, str], settings: Settings, store: Store, tmp_path: Path
) -> None:
    env = {**smtp_env, **IN_DATABASE, "MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}
    raw = make_message("q1@customer.example.org", subject="Invoice?")
    assert cli(env, "ingest", input=raw).exit_code == 0
    invoice = random.Random(3).randbytes(MiB + 10)
    (tmp_path / "invoice.pdf").write_bytes(invoice)
    sent = cli(env, "reply", "1", "-m", "Here it is.", "--attach", str(tmp_path / "invoice.pdf"))
    assert sent.exit_code == 0, sent.output
    assert blobs_of(store) == {sha(invoice)} and files_of(settings) == set()
    saved = cli(env, "attachments", "1", "--save", str(tmp_path / "out"))
    assert saved.exit_code == 0, saved.output
    assert (tmp_path / "out" / "invoice.pdf").read_bytes() == invoice


def test_move_attachments_both_ways(
    run: Run, settings: Settings, store: Store, tmp_path: Path
) -> None:
    contents = [random.Random(n).randbytes(n * 700_000 + 1) for n in range(4)]
    numbers = [ingest(run, AS_FILES, n, (f"f{n}.bin", data)) for n, data in enumerate(contents)]
    digests = {sha(data) for data in contents}
    assert files_of(settings) == digests

    first = run("db", "move-attachments", "--to", "database", env=AS_FILES)
    assert first.exit_code == 0, first.output
    size = sum(map(len, contents))
    assert first.stdout == (
        f"copied 4 attachments ({size} bytes) to the database; 0 were there already\n"
    )
    # Kept where they were without --delete-source; the setting still says files here.
    assert "set it to database on every host" in first.stderr
    assert files_of(settings) == digests and blobs_of(store) == digests

    second = run("db", "move-attachments", "--to", "database", "--delete-source", env=IN_DATABASE)
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("copied 0 attachments (0 bytes) to the database; 4 were")
    assert "removed 4 from where they were" in second.stdout and second.stderr == ""
    assert files_of(settings) == set() and blobs_of(store) == digests

    back = run("db", "move-attachments", "--to", "files", "--delete-source", env=AS_FILES)
    assert back.exit_code == 0, back.output
    assert back.stdout.startswith(f"copied 4 attachments ({size} bytes) to ")
    assert files_of(settings) == digests and blobs_of(store) == set()
    for number, data in zip(numbers, contents, strict=True):
        out = tmp_path / f"out{number}"
        assert run("attachments", number, "--save", str(out), env=IN_DATABASE).exit_code == 0
        assert next(out.iterdir()).read_bytes() == data


def test_move_attachments_mistakes_and_damage(run: Run, settings: Settings, store: Store) -> None:
    bogus = run("db", "move-attachments", "--to", "s3")
    assert bogus.exit_code == 2
    assert bogus.stderr == "mailsupport: --to 's3': use database or files\n"
    assert run("db", "move-attachments").exit_code == 2  # --to is required

    ingest(run, AS_FILES, 1, ("a.bin", b"first"), ("b.bin", b"second"))
    root = settings.data_dir / "attachments"
    (root / sha(b"first")[:2] / sha(b"first")).write_bytes(b"tampered")
    (root / sha(b"second")[:2] / sha(b"second")).unlink()
    result = run("db", "move-attachments", "--to", "database", "--delete-source", env=IN_DATABASE)
    assert result.exit_code == 1
    assert f"attachment {sha(b'first')} is damaged" in result.stderr
    assert f"attachment {sha(b'second')} is stored nowhere" in result.stderr
    assert blobs_of(store) == set() and files_of(settings) == {sha(b"first")}


# -- killed at random moments ------------------------------------------------------------------


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forkserver]:
    with Forkserver(tmp_path_factory.mktemp("forks")) as server:
        yield server


def check_whole(settings: Settings, store: Store, where: str) -> None:
    """Every attachment readable whole from wherever it is; every blob row complete; no
    file under a digest name that is not its content."""
    with store.read() as session:
        digests = set(session.exec(select(Attachment.sha256)).all())
        pieces = dict(
            session.exec(
                select(AttachmentChunk.sha256, sa.func.count()).group_by(AttachmentChunk.sha256)
            ).all()
        )
        blobs = session.exec(select(AttachmentBlob)).all()
    for row in blobs:
        assert pieces.get(row.sha256, 0) == row.chunks, f"{where}: half a blob {row.sha256}"
    with attachment_store(settings).reading(store) as read:
        for digest in digests:
            assert sha(b"".join(read(digest))) == digest, f"{where}: {digest} damaged"
    for name in files_of(settings):
        if not name.startswith(".tmp-"):
            path = settings.data_dir / "attachments" / name[:2] / name
            assert sha(path.read_bytes()) == name, f"{where}: file {name} damaged"


@pytest.mark.slow
@pytest.mark.parametrize("to", ["database", "files"])
def test_move_attachments_killed_at_random_moments_then_run_again(
    env_for_cli: dict[str, str],
    settings: Settings,
    store: Store,
    forks: Forkserver,
    to: str,
) -> None:
    """Stopped at any instruction, a move leaves every attachment whole in one place or
    the other, and the next run finishes it."""
    source = "files" if to == "database" else "database"
    rng = random.Random(7)
    contents = [rng.randbytes(rng.randint(1, 3 * MiB // 2)) for _ in range(24)]
    settings = settings.model_copy(update={"attachments": source, "parse_workers": 0})
    with Pipeline(settings, store) as pipeline:
        for n, data in enumerate(contents):
            raw = make_message(
                f"k{n}@customer.example.org",
                subject=f"files {n}",
                attachments=[(f"f{n}.bin", "application/octet-stream", data)],
            )
            assert pipeline.ingest(Incoming(raw, "test"), NOW).kind == "new"
    everything = {sha(data) for data in contents}
    env = {**env_for_cli, "MAILSUPPORT_ATTACHMENTS": to}
    argv = ["db", "move-attachments", "--to", to, "--delete-source"]
    runs: list[ForkRun] = []
    half_way = 0  # kills that stopped a move with some moved and some not
    # Kills from the start-up on, later each time (a killed run leaves less to do), so they
    # land all over: listing, copying a file or a blob, committing, removing the original.
    # Once the moving has begun the kills come more slowly later, to land among it.
    delay = 0.02
    for attempt in range(80):
        result = forks.run(argv, env, kill_after=delay * rng.uniform(0.8, 1.2))
        runs.append(result)
        check_whole(settings, store, f"attempt {attempt}, {result}")
        there = len(moved_to(settings, store, to) & everything)
        half_way += result.killed and 0 < there < len(everything)
        delay *= 1.08 if there else 1.3
        if result.code == 75 and "another move" in result.output:
            time.sleep(0.2)  # the killed one's database session is not gone yet
        elif not result.killed:
            break
    assert half_way >= 2, [str(r) for r in runs]
    assert runs[-1].code == 0, runs[-1].output
    assert moved_to(settings, store, to) == everything
    assert moved_to(settings, store, source) == set()


def moved_to(settings: Settings, store: Store, place: str) -> set[str]:
    if place == "database":
        return blobs_of(store)
    return {name for name in files_of(settings) if not name.startswith(".tmp-")}
