"""`mailsupport poll` against real IMAP servers on loopback (pymap, and Dovecot when installed)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.errors import TemporaryError
from mailsupport.imapconn import connect
from mailsupport.locks import exclusive
from mailsupport.pipeline import Pipeline
from mailsupport.poll import FolderPoller
from mailsupport.store.attachments import attachment_store
from mailsupport.store.db import Store
from mailsupport.store.models import ImapFolder, ImapPending, Message, RawMessage
from tests.support.imapservers import DovecotServer
from tests.support.mailboxes import flags_by_uid, imap_env, imap_settings, mail, poll, stored_ids
from tests.support.mailfactory import make_message
from tests.support.paths import ROOT


@pytest.mark.slow
def test_first_poll_takes_only_new_mail_by_default(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        imap_server.append(mail(i))
    env = imap_env(env_for_cli, imap_server)
    first = poll(env)
    assert first.exit_code == 0, first.output
    assert first.output.strip() == (
        "poll INBOX: read 0, new tickets 0, threaded replies 0, duplicates 0, quarantined 0; "
        "left 5 older messages: `mailsupport poll --since DATE` or `mailsupport poll --all` "
        "takes them"
    )
    new_uid = imap_server.append(mail(10))
    reply_uid = imap_server.append(
        make_message("r10@customer.example.org", in_reply_to="<m10@customer.example.org>")
    )
    second = poll(env)
    assert "read 2, new tickets 1, threaded replies 1" in second.output
    assert stored_ids(store) == ["m10@customer.example.org", "r10@customer.example.org"]
    flags = flags_by_uid(imap_server)
    assert b"\\Seen" in flags[new_uid] and b"\\Seen" in flags[reply_uid]
    assert all(b"\\Seen" not in flags[uid] for uid in sorted(flags)[:5])  # old mail untouched
    assert "read 0," in poll(env).output


@pytest.mark.slow
def test_start_unseen_takes_unread_history(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    imap_server.append(mail(1), flags=[b"\\Seen"])
    imap_server.append(mail(2))
    env = imap_env(env_for_cli, imap_server, imap_start="unseen")
    assert "read 1, new tickets 1" in poll(env).output
    imap_server.append(mail(3), flags=[b"\\Seen"])  # new mail is taken even if already read
    assert "read 1, new tickets 1" in poll(env).output
    assert stored_ids(store) == ["m2@customer.example.org", "m3@customer.example.org"]


def test_start_since_a_date(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    imap_server.append(mail(1), date=datetime(2025, 1, 5, tzinfo=UTC))
    imap_server.append(mail(2), date=datetime(2026, 2, 5, tzinfo=UTC))
    env = imap_env(env_for_cli, imap_server, imap_start="since:2026-01-01")
    assert "read 1," in poll(env).output
    assert stored_ids(store) == ["m2@customer.example.org"]


@pytest.mark.slow
def test_start_all_takes_everything_in_one_run_and_nothing_twice(
    imap_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    for i in range(40):
        imap_server.append(mail(i))
    env = imap_env(env_for_cli, imap_server, imap_start="all")
    assert "read 40, new tickets 40" in poll(env).output
    assert "read 0," in poll(env).output
    assert len(stored_ids(store)) == 40
    assert all(b"\\Seen" in f for f in flags_by_uid(imap_server).values())


@pytest.mark.slow
def test_a_thousand_old_messages_on_first_run_are_left_alone(
    dovecot_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    # Dovecot only: pymap takes ~50 s to append 1,000 messages.
    imap_server = dovecot_server
    with imap_server.client() as client:
        for i in range(1000):
            client.append("INBOX", mail(i))
    env = imap_env(env_for_cli, imap_server)
    assert "read 0," in poll(env).output
    assert stored_ids(store) == []
    imap_server.append(mail(5000))
    assert "read 1, new tickets 1" in poll(env).output


@pytest.mark.slow
def test_processed_and_quarantine_folders(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(
        env_for_cli, imap_server,
        imap_processed_folder="Done", imap_quarantine_folder="Broken", imap_start="all",
    )  # fmt: skip
    imap_server.append(mail(1))
    imap_server.append(b"\x00\x01\x02 not a message at all \xff")
    imap_server.append(mail(2))
    result = poll(env)
    assert "read 3, new tickets 2" in result.output and "quarantined 1" in result.output
    assert flags_by_uid(imap_server, "INBOX") == {}  # moved, not copied
    assert len(flags_by_uid(imap_server, "Done")) == 2
    assert len(flags_by_uid(imap_server, "Broken")) == 1
    [entry] = json.loads(CliRunner().invoke(app, ["quarantine", "list", "--json"], env=env).output)
    assert entry["origin"].startswith("imap:")


@pytest.mark.slow
def test_a_20_mb_attachment(imap_server, env_for_cli, store, settings) -> None:  # type: ignore[no-untyped-def]
    blob = os.urandom(20 * 1024 * 1024)
    raw = mail(1, attachments=[("dump.bin", "application/octet-stream", blob)])
    imap_server.append(raw)
    env = imap_env(env_for_cli, imap_server, imap_start="all")
    # Base64 makes it ~27 MB: over the default 25 MiB, so it is kept whole in the quarantine.
    assert "quarantined 1" in poll(env).output
    runner = CliRunner()
    [entry] = json.loads(runner.invoke(app, ["quarantine", "list", "--json"], env=env).output)
    assert entry["size"] == len(raw)
    # With a higher limit the same message is stored, attachment and all.
    roomy = {**env, "MAILSUPPORT_MAX_MESSAGE_BYTES": str(40 * 1024 * 1024)}
    assert "new tickets 1" in runner.invoke(app, ["quarantine", "retry", "--all"], env=roomy).output
    digest = hashlib.sha256(blob).hexdigest()
    with attachment_store(settings).reading(store) as read:  # a file, or pieces in the database
        assert sum(len(piece) for piece in read(digest)) == len(blob)


@pytest.mark.slow
def test_uidvalidity_change_never_retickets_old_mail(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    imap_server.create_folder("Support")
    env = imap_env(env_for_cli, imap_server, imap_folder="Support", imap_start="all")
    for i in range(3):
        imap_server.append(mail(i), folder="Support")
    assert "new tickets 3" in poll(env).output
    with store.read() as session:
        before = session.exec(select(ImapFolder)).one().uidvalidity
    # The mailbox is migrated: same mail, flags kept, new UIDVALIDITY, one new unread message.
    imap_server.delete_folder("Support")
    imap_server.create_folder("Support")
    for i in range(3):
        imap_server.append(mail(i), folder="Support", flags=[b"\\Seen"])
    imap_server.append(mail(3), folder="Support")
    imap_server.append(mail(0), folder="Support")  # unread, but stored before
    result = poll(env)
    assert "UIDVALIDITY changed" in result.output
    assert "read 2, new tickets 1, threaded replies 0, duplicates 1" in result.output
    with store.read() as session:
        assert session.exec(select(ImapFolder)).one().uidvalidity != before
    assert len(stored_ids(store)) == 4


@pytest.mark.slow
def test_a_bad_message_among_good_ones(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server, imap_start="all", max_message_bytes="3000")
    imap_server.append(mail(1))
    imap_server.append(mail(2, body="x" * 5000))
    imap_server.append(mail(3))
    assert (
        "read 3, new tickets 2, threaded replies 0, duplicates 0, quarantined 1" in poll(env).output
    )
    assert all(b"\\Seen" in f for f in flags_by_uid(imap_server).values())


def test_a_second_poller_on_the_same_folder_exits_at_once(
    imap_server, env_for_cli, store, settings
) -> None:  # type: ignore[no-untyped-def]
    configured = imap_settings(settings, imap_server)
    name = f"imap:{configured.imap_account}/INBOX"
    with exclusive(store, name, settings.data_dir / "locks") as held:
        assert held
        result = poll(imap_env(env_for_cli, imap_server))
    assert result.exit_code == 0
    assert "another poll of" in result.output and "is running" in result.output


@pytest.mark.slow
def test_exit_codes_for_a_wrong_password_and_an_absent_server(imap_server, env_for_cli) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server)
    wrong = poll({**env, "MAILSUPPORT_IMAP_PASSWORD": "not-the-password"})
    assert wrong.exit_code == 2
    assert "MAILSUPPORT_IMAP_PASSWORD" in wrong.output
    imap_server.kill()
    gone = poll(env)
    assert gone.exit_code == 75
    assert gone.output.startswith("mailsupport: IMAP server 127.0.0.1:")


def test_missing_folder_is_a_configuration_error(imap_server, env_for_cli) -> None:  # type: ignore[no-untyped-def]
    result = poll(imap_env(env_for_cli, imap_server, imap_folder="Nope"))
    assert result.exit_code == 2
    assert "MAILSUPPORT_IMAP_FOLDER" in result.output


# -- crashes and dropped connections ----------------------------------------------------------


def run_poll_killed_at(env: dict[str, str], target: str, after_calls: int) -> int:
    """Run `mailsupport poll` in a subprocess that SIGKILLs itself inside `target` (a
    "module:Class.method" name) on its `after_calls`-th call, after the call returned."""
    module, qualname = target.split(":")
    owner, method = qualname.split(".")
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        import {module} as m
        original = m.{owner}.{method}
        calls = 0
        def wrapped(*args, **kwargs):
            global calls
            result = original(*args, **kwargs)
            calls += 1
            if calls == {after_calls}:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        m.{owner}.{method} = wrapped
        from mailsupport.cli import main
        sys.argv = ["mailsupport", "poll"]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, cwd=ROOT,
        capture_output=True, timeout=120,
    )  # fmt: skip
    return proc.returncode


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "after_calls"),
    [
        # between fetching and storing: the pipeline returned, the commit has not happened
        ("mailsupport.pipeline:Pipeline.process", 1),
        ("mailsupport.pipeline:Pipeline.process", 9),
        # between storing and flagging: committed, not yet \Seen on the server
        ("mailsupport.poll:FolderPoller._take", 1),
        ("mailsupport.poll:FolderPoller._take", 2),
        # after flagging, before the pending rows are cleared
        ("mailsupport.sources.imap:ImapFolderSource.mark", 1),
    ],
)
def test_kill_9_at_any_point_loses_nothing_and_duplicates_nothing(
    imap_server, env_for_cli, store, target: str, after_calls: int
) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server, imap_start="all")
    ids = []
    for i in range(20):
        raw = mail(i) if i % 3 else make_message(
            f"m{i}@customer.example.org", in_reply_to=f"<m{i - 1}@customer.example.org>"
        )  # fmt: skip
        imap_server.append(raw)
        ids.append(f"m{i}@customer.example.org")
    code = run_poll_killed_at(env, target, after_calls)
    assert code == -signal.SIGKILL
    result = poll(env)
    assert result.exit_code == 0, result.output
    assert stored_ids(store) == sorted(ids)
    assert "read 0," in poll(env).output
    assert all(b"\\Seen" in f for f in flags_by_uid(imap_server).values())
    with store.read() as session:
        assert session.exec(select(ImapPending)).all() == []
        tickets = {t for t in session.exec(select(Message.ticket_id)).all()}
    assert len(tickets) == 20 - len(range(0, 20, 3)) + 1  # replies joined their parents


def test_messages_expunged_before_their_chunk_is_fetched_are_passed_over(
    dovecot_server: DovecotServer,
    settings: Settings,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A batch is fetched a chunk at a time while the parse workers begin; a message another
    # client expunged meanwhile (here the first, some in the middle, a whole chunk's worth
    # and the last) is nothing to take, and the rest are filed against the right UIDs.
    monkeypatch.setattr("mailsupport.sources.imap.FETCH_CHUNK", 3)
    configured = imap_settings(settings, dovecot_server, imap_start="all", imap_batch=20)
    uids = [dovecot_server.append(mail(i)) for i in range(14)]
    gone = {0, 4, 6, 7, 8, 13}  # positions in the batch
    pipeline = Pipeline(configured, store)
    client = connect(configured)
    original_fetch = client.fetch
    other = connect(configured)
    other.select_folder("INBOX")

    expunged: list[int] = []

    def expunge_first(uids_asked, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if b"BODY.PEEK[]" in data and not expunged:
            expunged.extend(uids[i] for i in gone)
            other.delete_messages(expunged)
            other.expunge()
        return original_fetch(uids_asked, data, *args, **kwargs)

    client.fetch = expunge_first  # type: ignore[method-assign]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731
    result = FolderPoller(configured, pipeline, client).poll(now)
    other.logout()
    assert len(expunged) == len(gone)
    kept = [i for i in range(14) if i not in gone]
    assert stored_ids(store) == sorted(f"m{i}@customer.example.org" for i in kept)
    with store.read() as session:
        rows = session.exec(
            select(Message.message_id, RawMessage.origin).join(
                RawMessage, RawMessage.id == Message.raw_id
            )
        ).all()
        message_uids = {message_id: int(origin.rsplit("=", 1)[-1]) for message_id, origin in rows}
        [ledger] = session.exec(select(ImapFolder)).all()
    assert message_uids == {f"m{i}@customer.example.org": uids[i] for i in kept}
    assert ledger.last_uid == uids[-1]  # the last one, gone, was dealt with too
    assert result.counts["new"] == len(kept)
    assert FolderPoller(configured, pipeline, client).poll(now).counts["new"] == 0
    client.logout()


def test_server_dropping_the_connection_mid_fetch(
    dovecot_server: DovecotServer, settings: Settings, store: Store
) -> None:
    configured = imap_settings(settings, dovecot_server, imap_start="all", imap_batch=5)
    for i in range(12):
        dovecot_server.append(mail(i))
    pipeline = Pipeline(configured, store)
    client = connect(configured)
    original_fetch = client.fetch
    calls = {"n": 0}

    def fetch_then_die(uids, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        if b"BODY.PEEK[]" in data:
            calls["n"] += 1
            if calls["n"] == 2:
                dovecot_server.kill()
        return original_fetch(uids, data, *args, **kwargs)

    client.fetch = fetch_then_die  # type: ignore[method-assign]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731
    with pytest.raises(TemporaryError, match="IMAP server"):
        FolderPoller(configured, pipeline, client).poll(now)
    assert len(stored_ids(store)) == 5  # the first batch was committed
    dovecot_server.restart()
    client = connect(configured)
    FolderPoller(configured, pipeline, client).poll(now)
    client.logout()
    assert stored_ids(store) == sorted(f"m{i}@customer.example.org" for i in range(12))


@pytest.mark.slow
def test_two_pollers_started_at_once_store_each_message_once(
    imap_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, **imap_env(env_for_cli, imap_server, imap_start="all")}
    for i in range(30):
        imap_server.append(mail(i))
    command = [sys.executable, "-m", "mailsupport", "poll"]
    procs = [
        subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out.decode())
    finally:
        for proc in procs:
            proc.kill()
    taken = sum(int(o.split("read ")[1].split(",")[0]) for o in outputs if "read " in o)
    assert taken == 30  # whether they overlapped or ran one after the other
    assert len(stored_ids(store)) == 30


@pytest.mark.slow
def test_pollers_of_different_folders_run_side_by_side(
    imap_server, env_for_cli, store, settings
) -> None:  # type: ignore[no-untyped-def]
    imap_server.create_folder("Billing")
    imap_server.append(mail(1))
    imap_server.append(mail(2), folder="Billing")
    inbox = imap_env(env_for_cli, imap_server, imap_start="all")
    billing = imap_env(env_for_cli, imap_server, imap_start="all", imap_folder="Billing")
    configured = imap_settings(settings, imap_server)
    with exclusive(store, f"imap:{configured.imap_account}/INBOX", settings.data_dir / "locks"):
        assert "is running" in poll(inbox).output
        assert "read 1, new tickets 1" in poll(billing).output
    assert "read 1, new tickets 1" in poll(inbox).output
    with store.read() as session:
        assert sorted(f.folder for f in session.exec(select(ImapFolder)).all()) == [
            "Billing",
            "INBOX",
        ]


def test_servers_without_move_get_copy_delete_and_uid_expunge(imap_server, settings, store) -> None:  # type: ignore[no-untyped-def]
    configured = imap_settings(
        settings, imap_server, imap_start="all", imap_processed_folder="Done"
    )
    for i in range(3):
        imap_server.append(mail(i))
    client = connect(configured)
    try:
        poller = FolderPoller(configured, Pipeline(configured, store), client)
        assert "MOVE" in poller.source.capabilities  # both test servers offer it...
        poller.source.capabilities.discard("MOVE")  # ...so pretend this one does not
        result = poller.poll(lambda: datetime.now(UTC))
    finally:
        client.logout()
    assert result.counts["new"] == 3
    assert flags_by_uid(imap_server, "INBOX") == {}
    assert len(flags_by_uid(imap_server, "Done")) == 3


@pytest.mark.slow
def test_a_thousand_messages_in_one_run_and_a_second_run_does_nothing(
    dovecot_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    with dovecot_server.client() as client:
        for i in range(1000):
            client.append("INBOX", mail(i))
    env = imap_env(env_for_cli, dovecot_server, imap_start="all", imap_batch="50")
    assert "read 1000, new tickets 1000" in poll(env).output
    assert "read 0," in poll(env).output
    assert len(stored_ids(store)) == 1000
    assert all(b"\\Seen" in f for f in flags_by_uid(dovecot_server).values())


@pytest.mark.slow
def test_a_refused_processed_folder_never_stops_new_mail(
    dovecot_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    # Dovecot refuses "/" in folder names here: every MOVE fails with a NO.
    env = imap_env(env_for_cli, dovecot_server, imap_start="all", imap_processed_folder="A/B")
    dovecot_server.append(mail(1))
    first = poll(env)
    assert first.exit_code == 2
    assert "read 1, new tickets 1" in first.output
    assert "MAILSUPPORT_IMAP_PROCESSED_FOLDER" in first.output
    dovecot_server.append(mail(2))
    second = poll(env)
    assert "read 1, new tickets 1" in second.output  # the refusal does not block intake
    assert stored_ids(store) == ["m1@customer.example.org", "m2@customer.example.org"]
    fixed = poll({**env, "MAILSUPPORT_IMAP_PROCESSED_FOLDER": "Done"})
    assert fixed.exit_code == 0 and "read 0," in fixed.output
    assert flags_by_uid(dovecot_server, "INBOX") == {}
    assert len(flags_by_uid(dovecot_server, "Done")) == 2
