"""Smaller leaks (issue 14, "Files and output"): the data directory is private whatever the
umask, no terminal output carries control characters or escape sequences from mail, and a
database error that retrying cannot cure exits 1 with one line instead of 75."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import psycopg.errors as pg
import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlmodel import select
from typer.testing import Result

import mailsupport.search
from mailsupport.cli.render import terminal_text, ticket_table, ticket_text
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, PermanentError, TemporaryError
from mailsupport.locks import Lock, folder_lock
from mailsupport.signing import load_or_create_secret
from mailsupport.store.db import Store, translate_db_error
from mailsupport.store.models import ImapFolder, OutboxItem, Ticket
from mailsupport.store.queries import TicketFilter, list_tickets, ticket_by_number, ticket_detail
from mailsupport.store.reader import reading
from tests.support.cli import Run
from tests.support.mailfactory import make_message

# Whatever a terminal could act on: C0 but newline and tab, DEL, C1 (U+0080-U+009F).
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# One of each: CSI as ESC [ and as U+009B, OSC with BEL and with ST, a lone ESC, DEL, NUL.
HOSTILE = (
    "\x1b[2J\u009b31m\x1b]0;pwned\x07\x1b]8;;http://evil.example/\x1b\\\u009d0;t\u009c\x1b\x7f"
)


@pytest.fixture(params=[0o022, 0o002, 0o000], ids=lambda mask: f"umask{mask:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The process umask for one test, put back after it."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def modes(top: Path) -> dict[str, int]:
    """Every path under `top` (and `top` itself, as "."), with its permission bits."""
    found = {".": stat.S_IMODE(top.lstat().st_mode)}
    for path in top.rglob("*"):
        found[str(path.relative_to(top))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_clean(result: Result) -> None:
    """Nothing on stdout or stderr that a terminal would act on."""
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        assert not CONTROLS.search(text), f"{name}: {text!r}"


# -- 1. files ---------------------------------------------------------------------------------


def test_everything_in_the_data_directory_is_private_whatever_the_umask(
    umask: int, settings: Settings, run: Run
) -> None:
    data = settings.data_dir
    assert not data.exists()
    raw = make_message(
        "files@customer.example.org", attachments=[("report.pdf", "application/pdf", b"%PDF-1")]
    )
    # Attachments as files on every backend: their modes are checked too.
    stored = run("ingest", input=raw, env={"MAILSUPPORT_ATTACHMENTS": "files"})
    assert stored.exit_code == 0, stored.stderr
    load_or_create_secret(data, None)
    store = Store.open(settings.db_url)
    lock = Lock(store, *folder_lock(settings))
    try:
        assert lock.acquire()
        # An open connection keeps SQLite's -wal and -shm files in place to be looked at.
        with store.read() as session:
            session.exec(select(Ticket)).all()
            doctor = run("doctor")
            found = modes(data)
    finally:
        lock.release()
        store.engine.dispose()
    assert "ok    data directory" in doctor.stdout, doctor.stdout
    expected = {"secret", "attachments"}
    if store.engine.dialect.name == "sqlite":
        expected |= {"mailsupport.db", "mailsupport.db-wal", "mailsupport.db-shm", "locks"}
    assert expected <= set(found), found
    assert any(name.startswith("attachments/") and "/" in name[12:] for name in found), found
    for name, mode in found.items():
        want = 0o700 if (data / name).is_dir() else 0o600
        assert mode == want, f"{name}: {mode:04o} under umask {umask:03o}"
    assert current_umask() == umask  # created with explicit modes, never by changing it


def test_what_agents_write_elsewhere_follows_their_umask(
    umask: int, settings: Settings, run: Run, tmp_path: Path
) -> None:
    raw = make_message(
        "saved@customer.example.org", attachments=[("report.pdf", "application/pdf", b"%PDF-1")]
    )
    assert run("ingest", input=raw).exit_code == 0
    saved = run("attachments", "1", "--save", str(tmp_path / "out"))
    assert saved.exit_code == 0, saved.stderr
    page = tmp_path / "report.html"
    assert run("report", "--html", str(page)).exit_code == 0
    assert stat.S_IMODE((tmp_path / "out" / "report.pdf").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(page.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("umask", [0o022], indirect=True)
def test_an_open_data_directory_is_left_as_found_and_doctor_says_how_to_close_it(
    umask: int, settings: Settings, run: Run
) -> None:
    data = settings.data_dir
    assert run("ingest", input=make_message("old@customer.example.org")).exit_code == 0
    load_or_create_secret(data, None)
    # As an older mailsupport left it under umask 022.
    data.chmod(0o755)
    (data / "secret").chmod(0o644)
    old_db = data / "mailsupport.db"
    if old_db.exists():
        old_db.chmod(0o644)
    before = modes(data)
    assert run("list").exit_code == 0

    doctor = run("doctor")
    assert doctor.exit_code == 1
    [line] = [line for line in doctor.stdout.splitlines() if "data directory" in line]
    assert line.startswith(f"FAIL  data directory: {data} is open to other users: ")
    assert "the directory (drwxr-xr-x)" in line and "secret (-rw-r--r--)" in line
    if old_db.exists():
        assert "mailsupport.db (-rw-r--r--)" in line
    assert f"run `chmod -R o-rwx {data}`" in line
    # Nothing was changed behind the operator's back (the WAL files may come and go).
    after = modes(data)
    assert {k: v for k, v in after.items() if k in before} == before

    data.chmod(0o750)  # shared with a group on purpose, as systemd's StateDirectoryMode=0750
    shared = run("doctor")
    assert f"ok    data directory: {data.resolve()}, shared with its group (0750)" in shared.stdout
    assert shared.exit_code == 0, shared.stdout


# -- 2. terminal output -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "multi", "one"),
    [
        ("plain text, ünïcødé, 日本", "plain text, ünïcødé, 日本", "plain text, ünïcødé, 日本"),
        ("red \x1b[1;31mALERT\x1b[0m", "red �ALERT�", "red �ALERT�"),
        ("csi \u009b2J one byte", "csi � one byte", "csi � one byte"),
        ("\x1b]0;title\x07osc", "�0;title�osc", "�0;title�osc"),  # the payload stays, inert
        ("\x1b]8;;http://x/\x1b\\link", "�8;;http://x/�link", "�8;;http://x/�link"),
        ("\u009d0;t\u009c", "�0;t�", "�0;t�"),
        ("don\u0092t", "don�t", "don�t"),  # a Windows quote read as Latin-1: no run-together
        ("lone \x1b", "lone �", "lone �"),
        ("nul\x00 del\x7f bell\x07", "nul� del� bell�", "nul� del� bell�"),
        ("a\tb\nc", "a\tb\nc", "a b c"),
        ("over\rwrite", "over\nwrite", "over write"),  # CR would return the cursor
        ("crlf\r\nline", "crlf\nline", "crlf line"),
        ("next\u0085line\u2028sep", "next�line\u2028sep", "next line sep"),
        ("form\x0cfeed\x0bvt", "form�feed�vt", "form feed vt"),
        ("esc\x1b\nnewline", "esc�\nnewline", "esc� newline"),
    ],
)
def test_terminal_text_replaces_every_control_and_sequence(text: str, multi: str, one: str) -> None:
    assert terminal_text(text) == multi
    assert terminal_text(text, one_line=True) == one
    assert not CONTROLS.search(terminal_text(HOSTILE + text, one_line=True))


def encoded_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def hostile_desk(run: Run, store: Store) -> None:
    """A ticket from mail full of C1 controls, an attachment, a quarantined message with
    escapes in its headers, an outbox error and an IMAP ledger with escapes in them."""
    body = "Hello\tthere \u009b2J\nline two \u009b31mred\u009b0m\ninvoice\n"
    name = encoded_word("Eve \u009b2J")
    subject = encoded_word("Pay \u009b31mnow\u009b0m \u009d0;pwned\u009c")
    raw = (
        f"From: {name} <eve@evil.example>\r\nTo: support@example.com\r\n"
        f"Subject: {subject}\r\nMessage-ID: <c1@evil.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}\r\n--b\r\nContent-Type: application/pdf\r\n"
        "Content-Disposition: attachment; filename*=utf-8''inv%C2%9B31moice.pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--b--\r\n"
    ).encode()
    taken = run("ingest", input=raw)
    assert taken.exit_code == 0, taken.stderr
    assert_clean(taken)
    headers = "From: x@evil.example\r\nX-Evil: " + HOSTILE + "\r\nSubject: big\r\n"
    big = headers.encode() + b"Message-ID: <q1@evil.example>\r\n\r\n" + b"x" * 4000 + b"\r\n"
    quarantined = run("ingest", input=big, env={"MAILSUPPORT_MAX_MESSAGE_BYTES": "1000"})
    assert quarantined.stdout.startswith("quarantined"), quarantined.output
    now = datetime.now(UTC)
    with store.write() as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.queue = "billing" + HOSTILE  # as an older version or a script may have stored it
        ticket.created_at -= timedelta(minutes=1)  # `report` ends at this second, made earlier
        session.add(ticket)
        session.add(
            OutboxItem(
                ticket_id=ticket.id,  # type: ignore[arg-type]
                message_id="out1@example.com",
                kind="reply",
                mail_from="support@example.com",
                recipients=["eve@evil.example"],
                data=b"",
                status="failed",
                last_error="550 5.1.1 " + HOSTILE + "\r\nno such user",
                next_attempt_at=now,
                created_at=now,
                queued_at=now,
            )
        )
        session.add(
            ImapFolder(account="eve" + HOSTILE + "@imap:993", folder="INBOX", uidvalidity=1)
        )
        session.add(
            ImapFolder(
                account="a@imap:993", folder="INBOX\u009b31m", uidvalidity=2, last_poll_at=now
            )
        )


@pytest.mark.slow
def test_no_command_prints_controls_or_escapes_from_mail(run: Run, store: Store) -> None:
    hostile_desk(run, store)
    outputs = {
        args: run(*args)
        for args in [
            ("list",),
            ("show", "1"),
            ("show", "1", "--full", "--history"),
            ("search", "invoice"),
            ("search", "pay"),
            ("attachments", "1"),
            ("report",),
            ("quarantine", "list"),
            ("quarantine", "show", "1"),
            ("outbox", "list"),
            ("status", "--offline"),
        ]
    }
    for args, result in outputs.items():
        assert result.exit_code == 0, (args, result.output)
        assert_clean(result)
    listed = outputs[("list",)].stdout
    assert "Pay �now� �0;pwned�" in listed
    shown = outputs[("show", "1")].stdout
    assert "Eve � <eve@evil.example>" in shown and "Pay �now� �0;pwned�" in shown
    assert "   Hello\tthere �\n   line two �red�\n   invoice" in shown  # lines and tabs stay
    assert "queue billing�" in shown
    assert "pdf" in outputs[("attachments", "1")].stdout
    assert "[invoice]" in outputs[("search", "invoice")].stdout
    assert "billing�" in outputs[("report",)].stdout
    quarantine = outputs[("quarantine", "show", "1")].stdout
    assert "X-Evil: ��" in quarantine and "0;pwned" in quarantine
    assert "\nSubject: big\n" in quarantine  # the headers keep their lines, CRs gone
    failed = outputs[("outbox", "list")].stdout
    assert "550 5.1.1 ��" in failed and "no such user" in failed
    assert "mailbox eve�" in outputs[("status", "--offline")].stdout
    # --json is for scripts and --raw is the message's bytes: both as they were.
    assert json.loads(run("show", "1", "--json").stdout)["subject"].startswith("Pay \u009b31m")
    raw = run("quarantine", "show", "1", "--raw").stdout_bytes
    assert HOSTILE.encode() in raw


def test_show_and_list_keep_colour_of_their_own(run: Run, store: Store) -> None:
    """The cleaning happens before colouring: our SGR codes survive, the mail's do not."""
    hostile_desk(run, store)
    url = store.engine.url.render_as_string(hide_password=False)
    with reading(url, lambda: store) as reader:
        rows = list_tickets(reader, TicketFilter(), "updated", False, 10, 0)
        ticket = ticket_by_number(reader, 1)
        assert ticket is not None
        detail = ticket_detail(reader, ticket)
    coloured = "\n".join(ticket_table(rows, 120, True)) + ticket_text(detail, 1, colour=True)
    ours = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert "\x1b[" in coloured and not CONTROLS.search(ours)


# -- 3. database errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orig", "kind"),
    [
        (pg.StatementTooComplex("stack depth limit exceeded"), PermanentError),
        (pg.ProgramLimitExceeded("index row size exceeds maximum"), PermanentError),
        (pg.DivisionByZero("division by zero"), PermanentError),
        (pg.SyntaxError("syntax error at or near"), PermanentError),
        (pg.InsufficientPrivilege("permission denied for table tickets"), PermanentError),
        (pg.InternalError_("cache lookup failed"), PermanentError),
        (pg.ConnectionFailure("server closed the connection"), TemporaryError),
        (pg.AdminShutdown("terminating connection due to administrator command"), TemporaryError),
        (pg.QueryCanceled("canceling statement due to statement timeout"), TemporaryError),
        (pg.TooManyConnections("sorry, too many clients already"), TemporaryError),
        (pg.DiskFull("could not extend file"), TemporaryError),
        (pg.LockNotAvailable("canceling statement due to lock timeout"), TemporaryError),
        (pg.SerializationFailure("could not serialize access"), TemporaryError),
        (
            pg.ReadOnlySqlTransaction("cannot execute UPDATE in a read-only transaction"),
            TemporaryError,
        ),
        (pg.InvalidCatalogName('database "x" does not exist'), ConfigError),
        (pg.InvalidSchemaName("no schema has been selected to create in"), ConfigError),
        (sqlite3.OperationalError("database is locked"), TemporaryError),
        (sqlite3.OperationalError("unable to open database file"), ConfigError),
    ],
)
def test_database_errors_by_what_a_retry_can_do(orig: Exception, kind: type) -> None:
    base = psycopg.Error if isinstance(orig, psycopg.Error) else sqlite3.Error
    wrapper = exc.DBAPIError.instance("SELECT ...", {}, orig, base)
    mapped = translate_db_error(wrapper)
    assert type(mapped) is kind, (orig, mapped)
    assert "\n" not in str(mapped)
    if kind is PermanentError:
        assert mapped is not None and mapped.exit_code == 1
        assert str(mapped).endswith("trying again will not help)")


def test_integrity_errors_stay_with_the_code_that_made_them() -> None:
    duplicate = exc.IntegrityError("INSERT ...", {}, pg.UniqueViolation("duplicate key value"))
    assert translate_db_error(duplicate) is None


def test_a_statement_the_database_cannot_run_is_permanent_on_both_backends(store: Store) -> None:
    """Real errors from the server: too deep an expression fails the same way every time."""
    deep = "SELECT " + "+".join(["1"] * 100_000)
    with pytest.raises(PermanentError) as caught, store.read() as session:
        session.execute(sa.text(deep))
    assert caught.value.exit_code == 1
    if store.engine.dialect.name == "postgresql":
        assert "stack depth limit exceeded (SQLSTATE 54001" in str(caught.value)
    else:
        assert "Expression tree is too large" in str(caught.value)


def or_query(terms: int) -> list[str]:
    return " OR ".join(f"w{i}" for i in range(terms)).split()


def test_a_search_too_large_to_plan_is_refused_before_the_database(run: Run, store: Store) -> None:
    result = run("search", *or_query(6000))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "mailsupport: the query has 6000 words and phrases, more than 200: "
        "search for fewer (the rarest words find the most)\n"
    )
    # The largest allowed query runs (and finds nothing, like grep).
    largest = run("search", *or_query(mailsupport.search.MAX_TERMS))
    assert largest.exit_code == 1 and largest.stderr.startswith("mailsupport: no ticket matches")


def test_stack_depth_exceeded_on_postgresql_exits_1_in_one_line(
    run: Run, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the bound, PostgreSQL's own limit: reported as permanent, not as 75."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's stack depth limit (SQLite's FTS5 takes such a query)")
    monkeypatch.setattr(mailsupport.search, "MAX_TERMS", 10**6)
    result = run("search", *or_query(20_000))
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "mailsupport: the request is too large for the database: stack depth limit exceeded "
        "(SQLSTATE 54001; trying again will not help)\n"
    )
