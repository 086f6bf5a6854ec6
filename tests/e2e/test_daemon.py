"""`mailsupport daemon` against real IMAP servers on loopback, mostly as a real process."""

from __future__ import annotations

import itertools
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport import daemon as daemon_module
from mailsupport.batching import READ_AHEAD
from mailsupport.config import Settings
from mailsupport.daemon import Backoff, Daemon
from mailsupport.imapconn import connect
from mailsupport.locks import exclusive, folder_lock, lock_key
from mailsupport.logs import RedactingFormatter
from mailsupport.pipeline import Pipeline
from mailsupport.poll import FolderPoller
from mailsupport.store.db import Store
from mailsupport.store.models import ImapPending, Message
from tests.support.daemons import WAIT, DaemonThread, wait_until
from tests.support.imapservers import DovecotServer, ImapServer
from tests.support.mailboxes import (
    flags_by_uid,
    folder_ledger,
    imap_env,
    imap_settings,
    mail,
    mid,
    poll,
    stored_ids,
)


def now() -> datetime:
    return datetime.now(UTC)


def wait_stored(store: Store, ids: list[str], timeout: float = WAIT) -> None:
    wait_until(lambda: set(ids) <= set(stored_ids(store)), f"{ids} stored", timeout)


# -- as a process ---------------------------------------------------------------------------


@pytest.mark.slow
def test_new_mail_during_idle_is_taken_at_once(
    imap_server: ImapServer, env_for_cli: dict[str, str], store: Store, daemons: Any
) -> None:
    # Polling every 300 s: anything taken within seconds was announced by IDLE.
    env = imap_env(env_for_cli, imap_server, imap_poll_seconds="300")
    process = daemons(env)
    process.wait_for_log("waiting for new mail")
    assert "(IDLE, and a poll every 300 s)" in process.log
    began = time.monotonic()
    imap_server.append(mail(1))
    wait_stored(store, [mid(1)])
    first = time.monotonic() - began
    # `poll` takes the same lock, so cron and the daemon never work at the same time.
    result = poll(env)
    assert result.exit_code == 0 and "another poll of" in result.output
    imap_server.append(mail(2, in_reply_to=f"<{mid(1)}>"))  # IDLE again after the first pass
    wait_stored(store, [mid(1), mid(2)])
    assert process.stop() == 0
    assert first < 5, f"took {first:.1f} s"
    log = process.log
    assert f"ticket #1 <{mid(1)}> new" in log and f"ticket #1 <{mid(2)}> reply" in log
    assert "daemon stopped (SIGTERM)" in log
    assert all(b"\\Seen" in f for f in flags_by_uid(imap_server).values())


@pytest.mark.slow
def test_sigterm_finishes_the_message_in_hand_and_exits_0(
    dovecot_server: DovecotServer, env_for_cli: dict[str, str], store: Store, daemons: Any
) -> None:
    total = 300
    with dovecot_server.client() as client:
        for i in range(total):
            client.append("INBOX", mail(i))
    env = imap_env(env_for_cli, dovecot_server, imap_start="all", imap_batch="50")
    process = daemons(env)
    wait_until(lambda: stored_ids(store), "the first batch committed", timeout=20)
    assert process.stop() == 0
    taken = len(stored_ids(store))
    assert 0 < taken < total, "stopped in the middle of the pass"
    assert "daemon stopped (SIGTERM)" in process.log
    # Nothing lost, nothing twice: what was not taken is taken by the next run.
    assert f"read {total - taken}, new tickets {total - taken}," in poll(env).output
    assert stored_ids(store) == sorted(mid(i) for i in range(total))
    with store.read() as session:
        assert session.exec(select(ImapPending)).all() == []
        assert len(session.exec(select(Message.id)).all()) == total
    assert all(b"\\Seen" in f for f in flags_by_uid(dovecot_server).values())


@pytest.mark.slow
def test_reconnects_after_the_server_comes_back(
    dovecot_server: DovecotServer, env_for_cli: dict[str, str], store: Store, daemons: Any
) -> None:
    env = imap_env(env_for_cli, dovecot_server, imap_poll_seconds="300", imap_retry_max_seconds="1")
    process = daemons(env)
    process.wait_for_log("waiting for new mail")
    dovecot_server.kill()
    process.wait_for_log("trying again in", count=2)  # noticed, and retried while down
    dovecot_server.restart()
    dovecot_server.append(mail(1))
    # A reconnect after the server's restart: slow on a busy machine (seen past 10 s).
    wait_stored(store, [mid(1)], timeout=3 * WAIT)
    process.wait_for_log("working again on")
    assert process.stop() == 0
    assert "WARNING IMAP server 127.0.0.1:" in process.log


@pytest.mark.slow
def test_a_second_daemon_stands_by_and_takes_over(
    dovecot_server: DovecotServer, env_for_cli: dict[str, str], store: Store, daemons: Any
) -> None:
    env = imap_env(env_for_cli, dovecot_server, imap_poll_seconds="1")
    active = daemons(env)
    active.wait_for_log("waiting for new mail")
    standby = daemons(env)
    standby.wait_for_log("standing by")
    dovecot_server.append(mail(1))
    wait_stored(store, [mid(1)])
    assert "waiting for new mail" not in standby.log  # it never touched the folder
    active.proc.kill()  # SIGKILL: the lock goes with the process
    active.proc.wait(timeout=WAIT)
    standby.wait_for_log("took over", timeout=5)
    standby.wait_for_log("waiting for new mail")
    dovecot_server.append(mail(2))
    wait_stored(store, [mid(1), mid(2)])
    assert standby.stop() == 0
    assert f"<{mid(2)}> new" in standby.log and f"<{mid(1)}>" not in standby.log


@pytest.mark.slow
def test_no_password_and_no_body_in_the_log_even_at_debug(
    dovecot_server: DovecotServer, env_for_cli: dict[str, str], store: Store, daemons: Any
) -> None:
    env = imap_env(env_for_cli, dovecot_server, log_level="DEBUG", imap_poll_seconds="300")
    process = daemons(env)
    process.wait_for_log("waiting for new mail")
    marker = "the-body-text-of-a-private-message"
    dovecot_server.append(mail(1, body=f"Hello,\n{marker}\n"))
    wait_stored(store, [mid(1)])
    assert process.stop() == 0
    log = process.log
    assert " DEBUG " in log and "Logged in as" in log  # the protocol side was at DEBUG
    assert dovecot_server.password not in log
    assert marker not in log
    assert f"ticket #1 <{mid(1)}> new" in log


@pytest.mark.slow
def test_a_wrong_password_at_startup_exits_2(
    dovecot_server: DovecotServer, env_for_cli: dict[str, str], daemons: Any
) -> None:
    wrong = "not-the-password-4711"
    process = daemons(imap_env(env_for_cli, dovecot_server, imap_password=wrong))
    assert process.proc.wait(timeout=WAIT) == 2
    assert "MAILSUPPORT_IMAP_PASSWORD" in process.log
    assert wrong not in process.log


def test_desks_on_schemas_of_one_database_lock_apart(store: Store, tmp_path: Any) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite's file locks are the data dir's")
    from tests.conftest import postgresql_schema

    with postgresql_schema() as url:
        other = Store.open(url, check_schema=False)
        try:
            with exclusive(store, "move-attachments", tmp_path) as here:
                with exclusive(other, "move-attachments", tmp_path / "o") as there:
                    assert here and there  # another desk's lock, though the same name
                with exclusive(store, "move-attachments", tmp_path / "t") as again:
                    assert not again  # this desk's own: held
        finally:
            other.engine.dispose()


def test_a_lost_advisory_lock_is_noticed_and_taken_again(
    dovecot_server: DovecotServer,
    env_for_cli: dict[str, str],
    settings: Settings,
    store: Store,
    daemons: Any,
) -> None:
    if store.engine.dialect.name != "postgresql":
        pytest.skip("file locks cannot be lost; PostgreSQL advisory locks can")
    env = imap_env(env_for_cli, dovecot_server, imap_poll_seconds="1")
    process = daemons(env)
    process.wait_for_log("waiting for new mail")
    # End the database session that holds the lock, as a PostgreSQL restart would.
    name, _ = folder_lock(imap_settings(settings, dovecot_server))
    with store.engine.begin() as conn:
        schema = conn.execute(sa.select(sa.func.current_schema())).scalar_one()
        key = lock_key(name, schema) & 0xFFFFFFFFFFFFFFFF
        pid = conn.execute(
            sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid::bigint = :high AND objid::bigint = :low"
            ),
            {"high": key >> 32, "low": key & 0xFFFFFFFF},
        ).scalar_one()
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    process.wait_for_log("lost the lock on")
    process.wait_for_log("holding the lock on")
    dovecot_server.append(mail(1))
    wait_stored(store, [mid(1)])
    assert process.stop() == 0


# -- in process: the parts a subprocess cannot show -----------------------------------------


def counting_connector(hide_idle: bool, calls: dict[str, int]) -> Callable[[Settings], Any]:
    """connect(), counting IDLE commands; `hide_idle` makes a real server look like one
    without IDLE (its CAPABILITY answer loses the word, nothing else changes)."""

    def connector(settings: Settings) -> Any:
        client = connect(settings)
        if hide_idle:
            real = client.capabilities
            client.capabilities = lambda: tuple(c for c in real() if c.upper() != b"IDLE")  # type: ignore[method-assign]
        original_idle = client.idle

        def idle() -> None:
            calls["idle"] += 1
            original_idle()

        client.idle = idle  # type: ignore[method-assign]
        return client

    return connector


@pytest.mark.slow
def test_without_idle_it_polls_every_interval(
    dovecot_server: DovecotServer, settings: Settings, store: Store
) -> None:
    configured = imap_settings(settings, dovecot_server, imap_poll_seconds=1)
    calls = {"idle": 0}
    daemon = Daemon(
        configured, Store.open(configured.db_url), now,
        connector=counting_connector(True, calls),
    )  # fmt: skip
    with DaemonThread(daemon):
        wait_until(lambda: folder_ledger(store), "the first pass")
        dovecot_server.append(mail(1))
        wait_stored(store, [mid(1)], timeout=5)
    assert calls["idle"] == 0


@pytest.mark.slow
def test_idle_is_issued_again_after_the_reissue_interval(
    dovecot_server: DovecotServer,
    settings: Settings,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(daemon_module, "IDLE_REISSUE_SECONDS", 0.5)  # 29 min in real life
    configured = imap_settings(settings, dovecot_server, imap_poll_seconds=300)
    calls = {"idle": 0}
    daemon = Daemon(
        configured, Store.open(configured.db_url), now,
        connector=counting_connector(False, calls),
    )  # fmt: skip
    with DaemonThread(daemon):
        wait_until(lambda: calls["idle"] >= 4, "IDLE issued four times", timeout=5)
        dovecot_server.append(mail(1))
        wait_stored(store, [mid(1)], timeout=5)


@pytest.mark.slow
def test_periodic_tasks_run_on_their_schedule_while_waiting(
    dovecot_server: DovecotServer, settings: Settings, store: Store
) -> None:
    configured = imap_settings(settings, dovecot_server, imap_poll_seconds=300)
    runs: list[float] = []
    task = daemon_module.Periodic("tick", 0.5, lambda: runs.append(time.monotonic()))
    daemon = Daemon(configured, Store.open(configured.db_url), now, tasks=[task])
    with DaemonThread(daemon):
        wait_until(lambda: len(runs) >= 4, "the task ran four times", timeout=5)
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(runs))


@pytest.mark.slow
def test_a_password_changed_while_running_is_logged_and_retried(
    dovecot_server: DovecotServer,
    settings: Settings,
    store: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    configured = imap_settings(
        settings, dovecot_server, imap_poll_seconds=1, imap_retry_max_seconds=1
    )
    daemon = Daemon(configured, Store.open(configured.db_url), now)
    with DaemonThread(daemon) as running:
        # The first pass done (not only begun): a login refused before it is a mistake to
        # exit on, not a change to wait out.
        wait_until(lambda: folder_ledger(store) and daemon.worked, "the first pass")
        # The password is changed on the server, and the connection drops.
        configured_password = dovecot_server.password
        dovecot_server.password = "changed-on-the-server"
        dovecot_server.kill()
        dovecot_server.restart()
        wait_until(  # a reconnect after the server's restart: slow on a busy machine
            lambda: [r for r in caplog.records if r.levelno == logging.ERROR],
            "the login failure logged as an error",
            timeout=3 * WAIT,
        )
        assert "MAILSUPPORT_IMAP_PASSWORD" in caplog.text
        assert running.thread.is_alive()
        # Set right again: the daemon picks up where it left off.
        dovecot_server.password = configured_password
        dovecot_server.kill()
        dovecot_server.restart()
        dovecot_server.append(mail(1))
        wait_stored(store, [mid(1)])


@pytest.mark.slow
def test_stopping_mid_batch_records_only_what_was_taken(
    imap_server: ImapServer, settings: Settings, store: Store
) -> None:
    # A stop lets the messages in hand be filed: on PostgreSQL those whose reads went
    # together (a window), on SQLite (no window) the one being filed when it came.
    configured = imap_settings(settings, imap_server, imap_start="all", imap_batch=50)
    stop_after = 5
    count = READ_AHEAD + 7
    hand = READ_AHEAD if store.engine.dialect.name == "postgresql" else stop_after
    uids = [imap_server.append(mail(i)) for i in range(count)]
    pipeline = Pipeline(configured, store)
    original = pipeline.process
    taken: list[int] = []

    def process(*args: Any, **kwargs: Any) -> Any:
        taken.append(1)
        return original(*args, **kwargs)

    pipeline.process = process  # type: ignore[method-assign]
    client = connect(configured)
    try:
        result = FolderPoller(configured, pipeline, client).poll(
            now, should_stop=lambda: len(taken) >= stop_after
        )
    finally:
        client.logout()
    assert sum(result.counts.values()) == hand and result.waiting == count - hand
    assert folder_ledger(store).last_uid == uids[hand - 1]
    assert stored_ids(store) == sorted(mid(i) for i in range(hand))
    flags = flags_by_uid(imap_server)
    assert [b"\\Seen" in flags[uid] for uid in uids] == [True] * hand + [False] * (count - hand)
    client = connect(configured)
    try:
        again = FolderPoller(configured, Pipeline(configured, store), client).poll(now)
    finally:
        client.logout()
    assert sum(again.counts.values()) == count - hand
    assert stored_ids(store) == sorted(mid(i) for i in range(count))


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    backoff = Backoff(cap=10, first=1, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next() == 1
    assert Backoff(cap=10, rand=lambda: 0.25).next() == 0.25


def test_the_log_formatter_blanks_out_secrets() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s", ["hunter2-secret", "pw", ""])
    try:
        raise ValueError("login failed for hunter2-secret")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "sent %s as pw", ("hunter2-secret",), sys.exc_info()
        )
    text = formatter.format(record)
    assert "hunter2-secret" not in text
    assert "sent ******** as pw" in text  # "pw" is too short: blanking it would garble words
    assert "ValueError: login failed for ********" in text  # tracebacks too
