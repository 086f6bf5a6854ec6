"""`import` stopped part way (kill -9, Ctrl-C) and run again: every message stored once, the
same tickets as an import that was never stopped, and nothing before the resume point read
or parsed again. A file changed since is not resumed from a stale offset.

The stopped imports are real `python -m mailsupport import` processes, stopped once the
database shows some batches committed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailsupport.config import Settings
from mailsupport.parsing import workers as parsers
from tests.support.cli import Run, cli
from tests.support.mailfactory import mailing_list_archive, make_message, mbox_file
from tests.support.paths import ROOT
from tests.support.processes import DIE_WITH_PARENT, live_group_members

BATCH = 10


@pytest.fixture
def archive(tmp_path: Path, env_for_cli: dict[str, str]) -> tuple[Path, list[bytes]]:
    """An mbox of a mailing list's archive (replies threaded across many batches)."""
    env_for_cli["MAILSUPPORT_STRANGER_REPLIES"] = "join"  # anyone on the list answers anyone
    messages, _ = mailing_list_archive(threads=120, seed=11)
    return mbox_file(tmp_path / "archive.mbox", *messages), messages


def start_import(env: dict[str, str], box: Path) -> subprocess.Popen[bytes]:
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "mailsupport", "import", "--batch", str(BATCH), str(box)]
    # A session of its own, as at a terminal: Ctrl-C reaches its whole process group.
    return subprocess.Popen(
        argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=DIE_WITH_PARENT, start_new_session=True,
    )  # fmt: skip


def recorded(url: str) -> tuple[int, int]:
    """(messages, byte offset) recorded for the one mbox imported; (0, 0) before any."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT messages, byte_offset FROM import_files")).first()
    except sa.exc.DBAPIError:  # the schema is not created yet
        return 0, 0
    finally:
        engine.dispose()
    return (row[0], row[1]) if row else (0, 0)


def stop_after(proc: subprocess.Popen[bytes], url: str, batches: int, how: signal.Signals) -> None:
    """Once `batches` batches are committed, SIGKILL the import process (`kill -9 PID`) or
    send SIGINT to its process group (Ctrl-C); fail if the import ended first. Its parse
    workers must be gone when it is."""
    deadline = time.monotonic() + 60
    while recorded(url)[0] < batches * BATCH:
        assert proc.poll() is None, "the import ended before it could be stopped"
        assert time.monotonic() < deadline, "no batch committed within a minute"
        time.sleep(0.01)
    if how == signal.SIGKILL:
        proc.kill()
    else:
        os.killpg(proc.pid, how)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while live_group_members(proc.pid):
        assert time.monotonic() < deadline, "parse workers outlived the import"
        time.sleep(0.05)


def stored_count(url: str) -> tuple[int, int]:
    """(messages, distinct Message-IDs) stored."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = "SELECT count(*), count(DISTINCT message_id) FROM messages"
            total, distinct = conn.execute(sa.text(query)).one()
    finally:
        engine.dispose()
    return total, distinct


def tickets(export: str) -> list[tuple]:
    """`export`'s tickets as (subject, requester, status, their Message-IDs), in a stable
    order: ticket numbers may differ between stores (PostgreSQL's sequences skip what a
    killed transaction took)."""
    found = []
    for line in export.splitlines():
        ticket = json.loads(line)
        ids = tuple(sorted(m["message_id"] for m in ticket["messages"]))
        found.append((ticket["subject"], ticket["requester"], ticket["status"], ids))
    return sorted(found)


def uninterrupted(box: Path, env_for_cli: dict[str, str], tmp_path: Path) -> list[tuple]:
    """The tickets an import of `box` in one go makes, in a fresh store of its own."""
    fresh = tmp_path / "fresh"
    env = {
        **env_for_cli,
        "MAILSUPPORT_DATA_DIR": str(fresh),
        "MAILSUPPORT_DATABASE_URL": f"sqlite:///{fresh / 'one-go.db'}",
    }
    result = cli(env, "import", str(box))
    assert result.exit_code == 0, result.output
    return tickets(cli(env, "export").output)


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Parse in this process (PARSE_WORKERS=0 in the caller's env) and count each parse."""
    calls: list[int] = []
    real = parsers.parse

    def parse(raw: bytes):  # type: ignore[no-untyped-def]
        calls.append(len(raw))
        return real(raw)

    monkeypatch.setattr(parsers, "parse", parse)
    return calls


def finish_and_compare(
    run: Run, box: Path, count: int, url: str, env: dict[str, str], tmp_path: Path, parses: list
) -> None:
    """Run the same command again after a stop at a committed batch: it goes on at the
    recorded message, parses only the rest, and ends as an import in one go would."""
    done, offset = recorded(url)
    assert 0 < done < count
    # What the last committed batch recorded is exactly what is stored: a batch cut off by
    # a kill left nothing behind, and a stop committed all it read.
    assert stored_count(url) == (done, done)
    again = run("import", "--batch", str(BATCH), str(box), env={"MAILSUPPORT_PARSE_WORKERS": "0"})
    assert again.exit_code == 0, again.output
    assert f"resuming {box} at message {done + 1} (byte {offset})" in again.output
    assert (
        f"read {count - done}, new tickets" in again.output
        and f"duplicates 0, quarantined 0; skipped {done} already imported" in again.output
    ), again.output
    assert len(parses) == count - done  # nothing before the resume point was parsed
    assert stored_count(url) == (count, count)
    assert recorded(url) == (count, box.stat().st_size)
    assert tickets(run("export").output) == uninterrupted(box, env, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill-9", "ctrl-c", "sigterm"]
)
def test_stopped_in_the_middle_then_the_same_command_finishes_it(
    how: signal.Signals,
    archive: tuple[Path, list[bytes]],
    settings: Settings,
    env_for_cli: dict[str, str],
    run: Run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box, messages = archive
    proc = start_import(env_for_cli, box)
    stop_after(proc, settings.db_url, batches=3, how=how)
    out, err = (stream.read().decode() for stream in (proc.stdout, proc.stderr))  # type: ignore[union-attr]
    if how == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # the batch in hand is committed, and it says how to go on
        assert proc.returncode == 128 + how, err  # 130 for Ctrl-C
        assert f"stopped by {how.name}" in err and "run the same command again" in err
        assert "Traceback" not in err
        assert f"read {recorded(settings.db_url)[0]}," in out  # all it read, recorded with it
    parses = counting_parses(monkeypatch)
    finish_and_compare(run, box, len(messages), settings.db_url, env_for_cli, tmp_path, parses)


def test_a_finished_mbox_is_not_read_again_and_restart_reads_it_all(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = mbox_file(tmp_path / "box.mbox", *(make_message(f"m{i}@x.example.org") for i in range(5)))
    assert "read 5, new tickets 5" in run("import", str(box)).output

    parses = counting_parses(monkeypatch)
    no_workers = {"MAILSUPPORT_PARSE_WORKERS": "0"}
    again = run("import", str(box), env=no_workers)
    assert f"{box}: all 5 messages imported before (--restart reads it again)" in again.output
    assert "read 0, new tickets 0" in again.output and "skipped 5 already imported" in again.output
    assert parses == []

    restarted = run("import", "--restart", str(box), env=no_workers)
    assert restarted.exit_code == 0, restarted.output
    assert "resuming" not in restarted.output and "imported before" not in restarted.output
    assert "read 5, new tickets 0, threaded replies 0, duplicates 5" in restarted.output
    assert len(parses) == 5


def test_a_changed_mbox_is_read_from_the_start_not_from_its_stale_offset(
    run: Run, tmp_path: Path, settings: Settings
) -> None:
    first = [make_message(f"m{i}@x.example.org", subject=f"Question {i}") for i in range(4)]
    box = mbox_file(tmp_path / "box.mbox", *first)
    assert "read 4, new tickets 4" in run("import", str(box)).output
    # The file is written again with a message put in before the old offset: going on from
    # that offset would miss it.
    box.unlink()
    inserted = make_message("inserted@x.example.org", subject="Put in the middle")
    mbox_file(box, first[0], inserted, *first[1:])

    again = run("import", str(box))
    assert again.exit_code == 0, again.output
    assert f"{box} changed since 4 of its messages were imported: reading it from the start" in (
        again.output
    )
    assert "resuming" not in again.output
    assert "read 1, new tickets 1" in again.output and "skipped 4 already imported" in again.output
    assert stored_count(settings.db_url) == (5, 5)
    assert recorded(settings.db_url) == (5, box.stat().st_size)


def test_mail_appended_to_an_mbox_is_taken_from_where_the_last_run_ended(
    run: Run, tmp_path: Path, settings: Settings
) -> None:
    box = mbox_file(tmp_path / "box.mbox", *(make_message(f"m{i}@x.example.org") for i in range(3)))
    assert "read 3" in run("import", str(box)).output
    end = box.stat().st_size
    mbox_file(box, make_message("later@x.example.org", subject="Written later"))  # appends

    again = run("import", str(box))
    assert f"resuming {box} at message 4 (byte {end})" in again.output
    assert "read 1, new tickets 1" in again.output and "skipped 3 already imported" in again.output
    assert recorded(settings.db_url) == (4, box.stat().st_size)


def test_a_maildir_again_parses_only_what_is_not_stored(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    for i in range(4):
        (maildir / "cur" / f"17000000{i}0.M{i}P1.host:2,S").write_bytes(
            make_message(f"md{i}@x.example.org", subject=f"Maildir {i}")
        )
    assert "read 4, new tickets 4" in run("import", str(maildir)).output
    # A file that sorts first, added since: no "last name done" would find it.
    (maildir / "new" / "1600000000.M9P1.host").write_bytes(
        make_message("early@x.example.org", subject="Delivered late, named early")
    )
    parses = counting_parses(monkeypatch)
    again = run("import", str(maildir), env={"MAILSUPPORT_PARSE_WORKERS": "0"})
    assert "read 1, new tickets 1" in again.output and "skipped 4 already imported" in again.output
    assert len(parses) == 1
