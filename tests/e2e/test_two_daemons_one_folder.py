"""Two daemons on one database and one IMAP folder: one works, the other stands by.

The folder lock (an advisory lock on PostgreSQL, a file lock on SQLite) lets one daemon take
mail; the other tries every MAILSUPPORT_IMAP_POLL_SECONDS and takes over when the first dies.
Each scenario runs as real processes against Dovecot while a thread keeps appending mail:
- the active daemon is SIGKILLed in the middle of a batch (its transaction open): the
  standby takes over within a poll interval and redoes exactly the rolled-back batch;
- both daemons start at the same moment: exactly one becomes active;
- the active daemon hangs (SIGSTOP): its lock is still held, so the standby must wait.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailsupport.store.db import Store
from mailsupport.store.models import ImapPending, Message, OutboxItem, Ticket
from tests.support.daemons import WAIT, DaemonProcess, wait_until
from tests.support.imapservers import DovecotServer
from tests.support.mailboxes import flags_by_uid, imap_env, mid
from tests.support.mailfactory import make_message
from tests.support.paths import ROOT
from tests.support.smtpserver import SmtpServer

POLL_SECONDS = 1
# How late the takeover may be beyond one poll interval: the standby's PostgreSQL round trip
# and the dead backend's exit, on a shared machine that can be slow.
TAKEOVER_MARGIN = 1.5
TOTAL = 60  # messages appended while the daemons run
PER_CONVERSATION = 3  # a new ticket and two replies
BURST, BURST_PAUSE = 4, 0.2  # appended four at a time, so that batches hold several messages
BATCH = 7  # MAILSUPPORT_IMAP_BATCH
HANG_AT = 20  # the active daemon hangs after processing its 20th message, before the commit

# Loaded at interpreter start (PYTHONPATH) by the daemons of the kill tests: the first daemon
# to process its HANG_AT-th message writes its pid to the marker and sleeps inside the batch's
# open transaction, so that the test's SIGKILL lands mid-batch, every run.
SITECUSTOMIZE = """\
import os

if os.environ.get("WORKERS_TEST_HANG_MARKER"):
    import time

    from mailsupport import pipeline

    original = pipeline.Pipeline.process
    calls = 0

    def process(self, *args, **kwargs):
        global calls
        outcome = original(self, *args, **kwargs)
        calls += 1
        if calls == int(os.environ["WORKERS_TEST_HANG_AFTER"]):
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
                fd = os.open(os.environ["WORKERS_TEST_HANG_MARKER"], flags, 0o600)
            except FileExistsError:
                return outcome  # the other daemon hung already: only one does
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            time.sleep(600)  # until SIGKILLed
        return outcome

    pipeline.Pipeline.process = process
"""

# "ticket #3 <m7@customer.example.org> reply: ...", not the outbox's "ticket #3 ack <...> sent"
TAKEN = re.compile(r"^(\S+ \S+) INFO ticket #\d+ <([^>]+)> (\w+):", re.MULTILINE)


def message(i: int) -> bytes:
    """Conversation i // 3, from a customer of its own (so ACK_LIMIT never interferes)."""
    c = i // PER_CONVERSATION
    sender = f"Customer {c} <c{c}@customer.example.org>"
    if i % PER_CONVERSATION == 0:
        raw = make_message(mid(i), subject=f"Question {c}", sender=sender)
    else:
        raw = make_message(
            mid(i), subject=f"Re: Question {c}", sender=sender, in_reply_to=f"<{mid(i - 1)}>"
        )
    return raw.replace(b"\n", b"\r\n")


def conversations() -> list[set[str]]:
    return [
        {mid(i) for i in range(start, start + PER_CONVERSATION)}
        for start in range(0, TOTAL, PER_CONVERSATION)
    ]


class Stream(threading.Thread):
    """Appends TOTAL messages to the folder in bursts, on one connection."""

    def __init__(self, server: DovecotServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as client:
                for i in range(TOTAL):
                    client.append("INBOX", message(i))
                    if i % BURST == BURST - 1:
                        time.sleep(BURST_PAUSE)
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self) -> None:
        self.join(timeout=WAIT)
        assert not self.is_alive(), "the stream did not finish"
        if self.error is not None:
            raise self.error


def incoming(store: Store) -> list[str]:
    """Message-IDs of the stored customer mail (our acknowledgements are stored too)."""
    with store.read() as session:
        return sorted(session.exec(select(Message.message_id).where(Message.direction == "in")))


def taken(process: DaemonProcess) -> list[tuple[datetime, str, str]]:
    """(log time, Message-ID, outcome) of every message the daemon processed, in order;
    logged inside the batch's transaction, so a rolled-back batch is listed too."""
    return [
        (datetime.strptime(at, "%Y-%m-%d %H:%M:%S,%f"), message_id, kind)
        for at, message_id, kind in TAKEN.findall(process.log)
    ]


def log_time(process: DaemonProcess, text: str) -> datetime:
    """When the daemon logged the first line containing `text` (local time, as logged)."""
    line = next(line for line in process.log.splitlines() if text in line)
    return datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S,%f")


def worker_env(
    env_for_cli: dict[str, str], server: DovecotServer, smtp: SmtpServer, tmp_path: Path
) -> dict[str, str]:
    """Both daemons' settings: a 1 s poll, acknowledgements on (through `smtp`)."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        **imap_env(
            env_for_cli,
            server,
            imap_poll_seconds=str(POLL_SECONDS),
            imap_batch=str(BATCH),
            smtp_host=smtp.host,
            smtp_port=str(smtp.port),
            smtp_security="none",
        ),
        "PYTHONPATH": f"{hooks}{os.pathsep}{ROOT}",
    }


def hanging(env: dict[str, str], marker: Path) -> dict[str, str]:
    return {
        **env,
        "WORKERS_TEST_HANG_MARKER": str(marker),
        "WORKERS_TEST_HANG_AFTER": str(HANG_AT),
    }


def settled(first: DaemonProcess, second: DaemonProcess) -> tuple[DaemonProcess, DaemonProcess]:
    """(active, standby) once each has said which it is; exactly one may be active."""

    def roles() -> list[str] | None:
        found = []
        for process in (first, second):
            log = process.log
            active, standby = "waiting for new mail" in log, "standing by" in log
            if process.proc.poll() is not None or (active and standby):
                raise AssertionError(f"unexpected state; its log:\n{log}")
            if not (active or standby):
                return None
            found.append("active" if active else "standby")
        return found

    found = wait_until(roles, "both daemons settled", timeout=2 * WAIT)
    assert sorted(found) == ["active", "standby"], found
    return (first, second) if found[0] == "active" else (second, first)


def kill_mid_batch_and_check(
    active: DaemonProcess,
    standby: DaemonProcess,
    store: Store,
    server: DovecotServer,
    smtp: SmtpServer,
    marker: Path,
) -> None:
    """Stream mail, SIGKILL the active daemon inside a batch, check the takeover and that
    every message was stored once, in the right ticket, with one acknowledgement."""
    stream = Stream(server)
    stream.start()
    wait_until(lambda: marker.exists() and marker.read_text(), "the active daemon hung")
    assert marker.read_text() == str(active.proc.pid), "the standby worked before the takeover"
    active.proc.kill()
    killed_at = datetime.now()  # the log's clock: local time
    active.proc.wait(timeout=WAIT)
    standby.wait_for_log("took over")
    stream.finish()
    expected = sorted(mid(i) for i in range(TOTAL))
    wait_until(lambda: incoming(store) == expected, "every message stored", timeout=2 * WAIT)
    wait_until(
        lambda: all(b"\\Seen" in f for f in flags_by_uid(server).values()),
        "every message flagged \\Seen on the server",
    )
    assert len(flags_by_uid(server)) == TOTAL
    assert standby.stop() == 0

    # The takeover came within one poll interval of the kill.
    takeover = (log_time(standby, "took over") - killed_at).total_seconds()
    by_active, by_standby = taken(active), taken(standby)
    first_stored = (by_standby[0][0] - killed_at).total_seconds()
    print(
        f"\ntakeover {takeover:.2f} s after the kill, first message taken after "
        f"{first_stored:.2f} s; active took {len(by_active)}, standby {len(by_standby)}"
    )
    assert takeover <= POLL_SECONDS + TAKEOVER_MARGIN, f"takeover took {takeover:.2f} s"

    # Processed once, except the batch the kill rolled back: the standby redid exactly that.
    active_ids = [m for _, m, _ in by_active]
    standby_ids = [m for _, m, _ in by_standby]
    assert len(set(active_ids)) == len(active_ids) and len(set(standby_ids)) == len(standby_ids)
    redone = set(active_ids) & set(standby_ids)
    assert 1 <= len(redone) <= BATCH, redone
    assert redone == set(active_ids[-len(redone) :]), "only the uncommitted tail is redone"
    assert sorted(set(active_ids) | set(standby_ids)) == expected
    assert {kind for _, _, kind in by_active + by_standby} == {"new", "reply"}
    assert "duplicate <" not in active.log + standby.log  # nothing committed came back

    # In the database: once each, one ticket per conversation, one acknowledgement each.
    with store.read() as session:
        rows = session.exec(
            select(Message.message_id, Message.ticket_id).where(Message.direction == "in")
        ).all()
        ticket_ids = set(session.exec(select(Ticket.id)).all())
        acks = Counter(
            session.exec(select(OutboxItem.ticket_id).where(OutboxItem.kind == "ack")).all()
        )
        assert session.exec(select(ImapPending)).all() == []
    assert sorted(m for m, _ in rows) == expected
    by_ticket: dict[int, set[str]] = {}
    for message_id, ticket_id in rows:
        by_ticket.setdefault(ticket_id, set()).add(message_id)
    assert sorted(map(sorted, by_ticket.values())) == sorted(map(sorted, conversations()))
    assert set(by_ticket) == ticket_ids
    assert acks == Counter(dict.fromkeys(ticket_ids, 1)), acks
    # What was sent (however far the outbox got): never twice to one customer.
    sent = Counter(rcpt for arrival in smtp.arrivals for rcpt in arrival.rcpt_tos)
    assert all(n == 1 for n in sent.values()), sent


@pytest.mark.slow
def test_the_standby_takes_over_a_batch_killed_mid_way(
    dovecot_server: DovecotServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
    daemons: Callable[[dict[str, str]], DaemonProcess],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "hung"
    env = hanging(worker_env(env_for_cli, dovecot_server, smtp_server, tmp_path), marker)
    active = daemons(env)
    active.wait_for_log("waiting for new mail")
    standby = daemons(env)
    standby.wait_for_log("standing by")
    kill_mid_batch_and_check(active, standby, store, dovecot_server, smtp_server, marker)


@pytest.mark.slow
def test_two_daemons_started_at_once_one_works(
    dovecot_server: DovecotServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
    daemons: Callable[[dict[str, str]], DaemonProcess],
    tmp_path: Path,
) -> None:
    marker = tmp_path / "hung"
    env = hanging(worker_env(env_for_cli, dovecot_server, smtp_server, tmp_path), marker)
    active, standby = settled(daemons(env), daemons(env))
    kill_mid_batch_and_check(active, standby, store, dovecot_server, smtp_server, marker)


@pytest.mark.slow
def test_a_hung_daemon_keeps_the_lock_and_the_standby_waits(
    dovecot_server: DovecotServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
    daemons: Callable[[dict[str, str]], DaemonProcess],
    tmp_path: Path,
) -> None:
    # A stopped process keeps its file lock and its database session (and with it the
    # advisory lock): nothing tells the standby it is hung, so the folder waits for it.
    env = worker_env(env_for_cli, dovecot_server, smtp_server, tmp_path)
    active = daemons(env)
    active.wait_for_log("waiting for new mail")
    standby = daemons(env)
    standby.wait_for_log("standing by")
    stream = Stream(dovecot_server)
    stream.start()
    wait_until(lambda: len(incoming(store)) >= TOTAL // 4, "a quarter stored")
    active.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(0.2)  # a commit that was on its way when the signal came
        before = incoming(store)
        time.sleep(3 * POLL_SECONDS)  # three chances for the standby to take the lock
        assert incoming(store) == before
        assert "took over" not in standby.log and not taken(standby)
    finally:
        active.proc.send_signal(signal.SIGCONT)
    stream.finish()
    expected = sorted(mid(i) for i in range(TOTAL))
    wait_until(lambda: incoming(store) == expected, "every message stored", timeout=2 * WAIT)
    assert active.stop() == 0
    standby.wait_for_log("took over")  # the lock was freed by the clean stop
    assert standby.stop() == 0
    ids = [m for _, m, _ in taken(active)]
    assert sorted(ids) == expected and not taken(standby)
