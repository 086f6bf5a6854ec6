"""Fault injection: processes killed at random points, servers that die, a locked database,
a full disk. Whatever happens, no message is lost, none becomes two tickets, and no ticket
gets two acknowledgements.

- `poll` (intake, flagging, then delivery of the acknowledgements it queued) SIGKILLed at
  random moments while mail keeps arriving and SMTP now and then greylists or drops the
  line; the same for `outbox flush`, with a server that sometimes accepts and never says so;
  the very first run of a desk (schema, secret, ledger) killed.
- The IMAP server killed part way through its answer to a FETCH, at a random byte.
- SMTP timeouts, and 4xx, 5xx and timeouts together during one `poll`.
- The database locked by another writer, from the start of a run or at a random moment.
- The attachment store unable to create its directory, or cut off in the middle of a file.

What "at least once" allows: an acknowledgement the SMTP server accepted just before its
sender died or timed out (before "sent" was recorded) goes out again, as the same bytes
with the same Message-ID. The tests check that only such a message arrives twice, that each
acknowledgement is queued once, and that every ticket gets exactly one distinct one.

The random tests use fixed seeds and print the seed and iteration on failure; change SEED to
explore other schedules. Processes are started by tests/support/faults.py's Forkserver: real
processes running the real CLI, forked from one preloaded helper so that a run starts in
milliseconds, SIGKILLed from outside. Kill times are drawn from the seeded generator over
the measured length of a run's start-up, intake and delivery (which of them each kill hit
is printed); timing still varies from machine to machine, so the outcome of each run does.
On SQLite 50 kills during `poll` and 25 during `outbox flush`; on PostgreSQL 25 and 15.

Covered elsewhere and not repeated here: SMTP 4xx, 5xx, dropped connections and a server
that is down, one message at a time, in tests/e2e/test_outbox.py (retry with backoff, failure
recorded on the ticket) and tests/e2e/test_cli_outbox.py (exit codes); kills at fixed points of
a poll in tests/e2e/test_imap_poll.py; a kill while the server holds DATA in tests/e2e/test_acks.py.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import col, select

from mailsupport.config import Settings, load_settings
from mailsupport.outbox.delivery import deliver_due
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.attachments import attachment_store
from mailsupport.store.db import Store
from mailsupport.store.files import AttachmentMissing
from mailsupport.store.models import (
    Attachment,
    ImapFolder,
    ImapPending,
    Message,
    OutboxItem,
    QuarantineEntry,
    RawMessage,
    Ticket,
    TicketEvent,
)
from tests.support.faults import (
    CutProxy,
    Forkserver,
    Pace,
    impatient,
    let_time_pass,
    write_lock_held,
)
from tests.support.imapservers import DOVECOT_BINARY, DovecotServer, ImapServer, PymapServer
from tests.support.mailfactory import make_message
from tests.support.smtpserver import SmtpServer, _Behaviour

SEED = 20260310
# Where a poll can be killed, as told by what it left behind; the loop goes on until each
# of intake and delivery has been hit this often, or the test would prove little.
INTAKE_PHASES = ("intake, in a batch", "intake, part committed", "stored, not flagged")
MIN_KILLS_PER_SPAN = 3
# Kills per backend: (during poll, during outbox flush). PostgreSQL runs fewer to keep the
# file's time in bounds; its transactions and locks are checked, not its stamina.
KILLS = {"sqlite": (50, 25), "postgresql": (25, 15)}
CUSTOMERS = "customer.example.org"


# ------------------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------------------


@pytest.fixture
def imap() -> Iterator[ImapServer]:
    """A server whose mail survives kill() and restart(): Dovecot, else pymap on Maildir."""
    server: DovecotServer | PymapServer
    server = DovecotServer() if DOVECOT_BINARY else PymapServer(backend="maildir")
    with server:
        yield server


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forkserver]:
    """One helper for the module: its start-up (importing everything) is paid once."""
    with Forkserver(tmp_path_factory.mktemp("forks")) as server:
        yield server


def desk_env(
    settings: Settings, imap: ImapServer, smtp: SmtpServer, **extra: str | int
) -> dict[str, str]:
    """Settings for a `mailsupport` process: this test's store, mailbox and SMTP server."""
    env = {
        "MAILSUPPORT_DATA_DIR": str(settings.data_dir),
        "MAILSUPPORT_DATABASE_URL": settings.db_url,
        "MAILSUPPORT_SUPPORT_ADDRESS": settings.support_address,
        "MAILSUPPORT_SUPPORT_NAME": settings.support_name,
        "MAILSUPPORT_IMAP_HOST": imap.host,
        "MAILSUPPORT_IMAP_PORT": str(imap.port),
        "MAILSUPPORT_IMAP_USER": imap.user,
        "MAILSUPPORT_IMAP_PASSWORD": imap.password,
        "MAILSUPPORT_IMAP_SECURITY": "none",
        "MAILSUPPORT_IMAP_BATCH": "3",  # several commits per run: more places to be killed
        "MAILSUPPORT_SMTP_HOST": smtp.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "10",
        # Every customer here writes from one domain, and every new ticket is to be
        # acknowledged exactly once: no per-domain limit (tests/e2e/test_ack_safety.py has it).
        "MAILSUPPORT_ACK_DOMAIN_LIMIT": "0",
    }
    env.update({f"MAILSUPPORT_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Conversation:
    root: str
    sender: str
    person: bool  # a person: gets exactly one acknowledgement; a machine gets none
    message_ids: list[str] = field(default_factory=list)


class Traffic:
    """Mail as it arrives at a desk: new questions (some with an attachment, some sharing
    one), answers to earlier ones, and machine mail that must not be acknowledged."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.conversations: list[Conversation] = []
        self.logo = rng.randbytes(3000)  # the same file in several messages: stored once

    def message(self) -> bytes:
        rng, n = self.rng, len(self.conversations)
        roll = rng.random()
        if roll < 0.25 and any(c.person for c in self.conversations):
            conversation = rng.choice([c for c in self.conversations if c.person])
            message_id = (
                f"{conversation.root.split('@')[0]}.{len(conversation.message_ids)}@{CUSTOMERS}"
            )
            conversation.message_ids.append(message_id)
            return crlf(make_message(
                message_id, subject=f"Re: Question {conversation.root}",
                sender=f"Person <{conversation.sender}>", body="More details, as promised.",
                in_reply_to=f"<{conversation.root}>", references=f"<{conversation.root}>",
            ))  # fmt: skip
        if roll < 0.35:
            root = f"robot{n}@machines.example.net"
            self.conversations.append(Conversation(root, root, person=False, message_ids=[root]))
            return crlf(make_message(
                root, subject=f"Nightly report {n}", sender=f"Robot <{root}>",
                body="All jobs finished.", extra_headers={"Auto-Submitted": "auto-generated"},
            ))  # fmt: skip
        root, sender = f"q{n}@{CUSTOMERS}", f"person{n}@{CUSTOMERS}"
        self.conversations.append(Conversation(root, sender, person=True, message_ids=[root]))
        attachments = []
        if rng.random() < 0.3:
            blob = self.logo if rng.random() < 0.5 else rng.randbytes(rng.randint(500, 20000))
            attachments.append(("screenshot.png", "image/png", blob))
        return crlf(make_message(
            root, subject=f"Question {n}", sender=f"Person {n} <{sender}>",
            body=f"Hello, problem number {n}.", attachments=attachments,
        ))  # fmt: skip

    def deliver(self, server: ImapServer, count: int) -> None:
        with server.client() as client:
            for _ in range(count):
                client.append("INBOX", self.message())

    @property
    def message_ids(self) -> set[str]:
        return {m for c in self.conversations for m in c.message_ids}


@dataclass
class Mailbox:
    """What the IMAP server shows of INBOX."""

    total: int
    unseen: int
    max_uid: int


def mailbox(server: ImapServer) -> Mailbox:
    with server.client() as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        return Mailbox(len(uids), len(client.search(["UNSEEN"])), max(uids, default=0))


def message_ids_in(server: ImapServer, folder: str) -> list[str]:
    with server.client() as client:
        if not client.folder_exists(folder):
            return []
        client.select_folder(folder, readonly=True)
        fetched = client.fetch(client.search(["ALL"]), [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    return [
        bytes(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"]).decode().split(":", 1)[1].strip(" \r\n<>")
        for data in fetched.values()
    ]


def arrived_id(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return str(message["Message-ID"]).strip().strip("<>")


def check_desk(store: Store, traffic: Traffic, where: str, *, complete: bool = False) -> None:
    """What must hold at every moment, crash or not; with `complete`, also that every
    message was taken and every acknowledgement queued."""
    with store.read() as session:
        stored = session.exec(
            select(Message.message_id, Message.ticket_id).where(Message.direction == "in")
        ).all()
        acks = session.exec(select(OutboxItem).where(OutboxItem.kind == "ack")).all()
        tickets = session.exec(select(Ticket)).all()
        quarantined = session.exec(select(QuarantineEntry)).all()
        ours = session.exec(select(Message.message_id).where(Message.direction == "out")).all()
        created = session.exec(
            select(TicketEvent.ticket_id).where(TicketEvent.action == "created")
        ).all()
    ticket_of = dict(stored)
    assert len(ticket_of) == len(stored), f"{where}: a message stored twice"
    assert set(ticket_of) <= traffic.message_ids, f"{where}: messages nobody sent"
    assert not quarantined, f"{where}: quarantined {[q.error for q in quarantined]}"
    owner: dict[int, str] = {}
    for conversation in traffic.conversations:
        ids = {ticket_of[m] for m in conversation.message_ids if m in ticket_of}
        assert len(ids) <= 1, f"{where}: conversation {conversation.root} split: {ids}"
        for ticket_id in ids:
            other = owner.setdefault(ticket_id, conversation.root)
            assert other == conversation.root, f"{where}: {other} and {conversation.root} joined"
    assert len(tickets) == len(owner), f"{where}: {len(tickets)} tickets for {len(owner)} talks"
    assert all(t.merged_into_id is None for t in tickets), f"{where}: tickets were merged"
    assert sorted(created) == sorted(t.id for t in tickets), f"{where}: 'created' events"
    assert sorted(ours) == sorted(a.message_id for a in acks), f"{where}: our mail on tickets"
    acks_by_ticket = Counter(a.ticket_id for a in acks)
    assert max(acks_by_ticket.values(), default=0) <= 1, f"{where}: two acks queued: {acks}"
    for conversation in traffic.conversations:
        ticket_id = ticket_of.get(conversation.root)
        [ack] = [a for a in acks if a.ticket_id == ticket_id] or [None]
        if ticket_id is None or not conversation.person:
            assert ack is None, f"{where}: an ack for {conversation.root}"
        elif complete:
            assert ack is not None, f"{where}: no ack for {conversation.root}"
        if ack is not None:
            assert ack.recipients == [conversation.sender], f"{where}: ack to {ack.recipients}"
    if complete:
        missing = traffic.message_ids - set(ticket_of)
        assert not missing, f"{where}: lost {sorted(missing)}"


def check_delivery(store: Store, smtp: SmtpServer, where: str) -> Counter[str]:
    """Everything queued went out; each arrival is a queued message byte for byte; nothing
    failed. Returns how often each Message-ID arrived (2 = accepted, then killed)."""
    with store.read() as session:
        items = session.exec(select(OutboxItem)).all()
        failures = session.exec(
            select(TicketEvent).where(TicketEvent.action == "delivery-failed")
        ).all()
    assert not failures, f"{where}: {[f.detail for f in failures]}"
    queued = {i.message_id: i for i in items}
    assert all(i.status == "sent" for i in items), f"{where}: {[i.status for i in items]}"
    arrived = Counter(arrived_id(a.data) for a in smtp.arrivals)
    assert set(arrived) == set(queued), f"{where}: arrived {arrived}, queued {sorted(queued)}"
    for arrival in smtp.arrivals:
        item = queued[arrived_id(arrival.data)]
        assert arrival.data == item.data, f"{where}: <{item.message_id}> changed on the way"
        assert list(arrival.rcpt_tos) == item.recipients
    return arrived


def check_mailbox_done(store: Store, server: ImapServer, where: str) -> None:
    box = mailbox(server)
    assert box.unseen == 0, f"{where}: {box.unseen} messages never flagged"
    with store.read() as session:
        assert session.exec(select(ImapPending)).all() == [], f"{where}: pending rows left"
        [ledger] = session.exec(select(ImapFolder)).all()
    assert ledger.last_uid == box.max_uid and ledger.waiting == 0, f"{where}: {ledger}"


def check_attachment_files(store: Store, settings: Settings, where: str) -> int:
    """Every attachment row has its content, complete, where the desk keeps it (a file, or
    pieces in the database); every file under a digest name holds exactly that content.
    Returns how many temporary files killed writers left behind."""
    root = settings.data_dir / "attachments"
    with store.read() as session:
        digests = set(session.exec(select(Attachment.sha256)).all())
    with attachment_store(settings).reading(store) as read:
        for digest in digests:
            check = hashlib.sha256()
            try:
                for piece in read(digest):
                    check.update(piece)
            except AttachmentMissing:
                raise AssertionError(f"{where}: attachment {digest} missing") from None
            assert check.hexdigest() == digest, f"{where}: attachment {digest} incomplete"
    leftovers = 0
    for path in root.rglob("*") if root.is_dir() else []:
        if path.is_dir():
            continue
        if path.name.startswith(".tmp-"):
            leftovers += 1  # a writer killed mid-file: never under a digest name, never used
            continue
        content = hashlib.sha256(path.read_bytes()).hexdigest()
        assert content == path.name, f"{where}: {path} is not what its name says"
    return leftovers


def unconfirmed(store: Store, smtp: SmtpServer, since: int) -> list[str]:
    """Message-IDs of what arrived at the server from arrival `since` on but is not recorded
    as sent: accepted, then the sender was killed or timed out before the "250". Only such
    a message may arrive again."""
    ids = [arrived_id(a.data) for a in smtp.arrivals[since:]]
    with store.read() as session:
        sent = set(
            session.exec(
                select(OutboxItem.message_id).where(
                    col(OutboxItem.message_id).in_(ids), OutboxItem.status == "sent"
                )
            ).all()
        )
    return [i for i in ids if i not in sent]


def check_resent(arrived: Counter[str], accepted: Counter[str], where: str) -> int:
    """Whatever arrived more than once was accepted unconfirmed that many times; returns
    how many arrived again."""
    for message_id, count in arrived.items():
        assert count - 1 <= accepted[message_id], f"{where}: <{message_id}> sent {count} times"
    return sum(count - 1 for count in arrived.values())


def unsent(store: Store) -> int:
    with store.read() as session:
        return len(session.exec(select(OutboxItem.id).where(OutboxItem.status == "queued")).all())


def claims(store: Store) -> set[str]:
    """The claim tokens on queued mail: senders that were killed before recording it."""
    with store.read() as session:
        tokens = session.exec(select(OutboxItem.claim_token).where(OutboxItem.status == "queued"))
        return {t for t in tokens if t is not None}


def stored_count(store: Store) -> int:
    with store.read() as session:
        return len(session.exec(select(Message.id).where(Message.direction == "in")).all())


def pending(store: Store) -> set[int]:
    """UIDs stored but not yet flagged on the server."""
    with store.read() as session:
        return set(session.exec(select(ImapPending.uid)).all())


def smtp_trouble(smtp: SmtpServer, rng: random.Random) -> str:
    """Mostly a working server; now and then one that greylists or drops the line."""
    trouble = rng.choices(["accept", "451", "drop"], weights=[6, 1, 1])[0]
    if trouble == "451":
        smtp.refuse_rcpt("451 4.7.1 Greylisted, try again later")
    elif trouble == "drop":
        smtp.drop_at("data")
    else:
        smtp.accept()
    return trouble


def settle(
    forks: Forkserver, argv: list[str], env: dict[str, str], store: Store, smtp: SmtpServer,
    done: Callable[[], bool], where: str,
) -> None:  # fmt: skip
    """Run to completion, as the next cron runs would, until `done()`."""
    smtp.accept()
    for attempt in range(6):
        let_time_pass(store)
        run = forks.run(argv, env)
        assert run.code in (0, 75), f"{where}: settling run {attempt}: {run}\n{run.output}"
        if done():
            return
    raise AssertionError(f"{where}: still not done after 6 unkilled runs")


def kill_report(phases: Counter[str], runs: list[str]) -> str:
    return f"kills by phase: {dict(phases)}\nruns:\n" + "\n".join(runs[-15:])


# ------------------------------------------------------------------------------------------
# kill -9 during poll (intake, flagging, and the delivery that follows it)
# ------------------------------------------------------------------------------------------


def calibrate(
    forks: Forkserver, argv: list[str], env: dict[str, str], traffic: Traffic,
    imap: ImapServer, smtp: SmtpServer, store: Store,
) -> Pace:  # fmt: skip
    """Time runs that are not killed: one with nothing to do, one that only takes mail (the
    SMTP server is away: one refused connection), and one that only sends what that queued."""
    assert forks.run(argv, env).code == 0  # the first: schema made, ledger started
    idle = forks.run(argv, env)
    traffic.deliver(imap, 6)
    smtp.stop()
    intake = forks.run(argv, env)
    smtp.start()
    assert intake.code == 0 and "read 6," in intake.output, intake.output
    let_time_pass(store)
    flush = forks.run(["outbox", "flush"], env)
    sent = int(flush.output.split(" sent")[0].split()[-1])
    assert flush.code == 0 and sent >= 3, flush.output
    idle_flush = forks.run(["outbox", "flush"], env)
    return Pace(
        idle.seconds,
        max(0.0, intake.seconds - idle.seconds) / 6,
        max(0.0, flush.seconds - idle_flush.seconds) / sent,
    )


@pytest.mark.slow
def test_kill_9_at_random_points_during_poll(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    """Mail keeps arriving; poll runs with acknowledgements sent in the same run (and copied
    to a Sent folder), and most runs are SIGKILLed at a random moment. The SMTP server now
    and then greylists or drops the line. In the end every message is one ticket message,
    every conversation one ticket, every person one acknowledgement."""
    rng = random.Random(SEED)
    traffic = Traffic(rng)
    env = desk_env(settings, imap, smtp_server, imap_sent_folder="Sent")
    argv = ["-v", "poll"]

    pace = calibrate(forks, argv, env, traffic, imap, smtp_server, store)
    kills = KILLS[store.engine.dialect.name][0]
    phases: Counter[str] = Counter()
    accepted: Counter[str] = Counter()  # Message-ID: accepted unconfirmed, so often
    runs: list[str] = []
    iteration = 0

    def missing() -> list[str]:
        """The spans where too few kills have landed yet: the schedule must reach them."""
        hits = {"intake": sum(phases[p] for p in INTAKE_PHASES), "delivery": phases["delivery"]}
        return [span for span, count in hits.items() if count < MIN_KILLS_PER_SPAN]

    while phases.total() < kills or missing():
        iteration += 1
        where = f"seed {SEED}, iteration {iteration}"
        assert iteration < 3 * kills, f"{where}: kills keep missing\n{kill_report(phases, runs)}"
        traffic.deliver(imap, rng.randint(1, 3))
        trouble = smtp_trouble(smtp_server, rng)
        env["MAILSUPPORT_IMAP_BATCH"] = str(rng.randint(1, 3))  # commit per message, or not
        # What earlier killed runs left adds to what this one has to do.
        to_take, to_send = mailbox(imap).unseen, unsent(store)
        to_send += to_take  # most new mail will want an acknowledgement
        weights = {"start-up": 1.0, "intake": 2.0, "delivery": 2.0}
        if phases.total() >= kills // 2:
            weights.update({span: 6.0 for span in missing()})
        delay, aim = pace.draw(rng, to_take, to_send, weights)
        before = (stored_count(store), claims(store), pending(store))
        arrivals = len(smtp_server.arrivals)
        run = forks.run(argv, env, kill_after=delay)
        accepted.update(unconfirmed(store, smtp_server, arrivals))
        pace.learn(run, to_take, to_send)
        runs.append(
            f"{where}: kill at {delay:.3f} s ({aim}), smtp {trouble}, batch "
            f"{env['MAILSUPPORT_IMAP_BATCH']}: {run}"
        )
        if run.killed:  # where it died, from what it left behind
            if claims(store) - before[1]:
                phases["delivery"] += 1
            elif pending(store) - before[2]:
                phases["stored, not flagged"] += 1
            elif mailbox(imap).unseen:
                if stored_count(store) > before[0]:
                    phases["intake, part committed"] += 1
                elif "mailsupport.pipeline" in run.output:  # it had processed some mail
                    phases["intake, in a batch"] += 1
                else:
                    phases["start: settings, database, login, ledger"] += 1
            else:
                phases["between intake and delivery"] += 1
        else:
            assert run.code == 0, f"{where}: {run}\n{run.output}"
        check_desk(store, traffic, where)
        let_time_pass(store)  # as if the next cron run came much later

    where = f"seed {SEED}, after {iteration} iterations"
    settle(
        forks, argv, env, store, smtp_server,
        lambda: mailbox(imap).unseen == 0 and unsent(store) == 0, where,
    )  # fmt: skip
    report = kill_report(phases, runs)
    check_desk(store, traffic, where + "\n" + report, complete=True)
    check_mailbox_done(store, imap, where)
    arrived = check_delivery(store, smtp_server, where + "\n" + report)
    resent = check_resent(arrived, accepted, where)
    leftovers = check_attachment_files(store, settings, where)
    copies = Counter(message_ids_in(imap, "Sent"))
    assert max(copies.values(), default=0) <= 1, f"{where}: a Sent copy twice: {copies}"
    assert set(copies) <= set(arrived), f"{where}: a Sent copy of mail never sent"
    # Nothing left to do, and doing it again changes nothing.
    arrivals = len(smtp_server.arrivals)
    again = forks.run(argv, env)
    assert "read 0," in again.output and len(smtp_server.arrivals) == arrivals
    people = sum(c.person for c in traffic.conversations)
    print(
        f"\n{phases.total()} kills in {iteration} runs ({report.splitlines()[0]}); "
        f"{len(traffic.message_ids)} messages, {len(traffic.conversations)} tickets, "
        f"{people} acks, {resent} sent again after a kill "
        f"(same Message-ID), {len(arrived) - len(copies)} Sent copies lost to kills, "
        f"{leftovers} temp files left by killed writers; {pace}"
    )


@pytest.mark.slow
def test_kill_9_during_the_very_first_run(
    tmp_path: Path, imap: ImapServer, smtp_server: SmtpServer, forks: Forkserver
) -> None:
    """The first run of a new desk also creates the database schema, the secret file and
    the folder's ledger, and (IMAP_START=all) takes what the folder already holds. Killed
    anywhere in it, the next run finds a usable desk and takes every message once."""
    rng = random.Random(SEED + 6)
    base = {
        "MAILSUPPORT_SUPPORT_ADDRESS": "support@example.com",
        "MAILSUPPORT_IMAP_HOST": imap.host,
        "MAILSUPPORT_IMAP_PORT": str(imap.port),
        "MAILSUPPORT_IMAP_USER": imap.user,
        "MAILSUPPORT_IMAP_PASSWORD": imap.password,
        "MAILSUPPORT_IMAP_SECURITY": "none",
        "MAILSUPPORT_IMAP_START": "all",
        "MAILSUPPORT_SMTP_HOST": smtp_server.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
    }

    def new_desk(name: str) -> tuple[dict[str, str], list[str]]:
        """A data directory of its own (SQLite in it, the default) and a folder of mail."""
        imap.create_folder(name)
        ids = [f"{name}.{i}@{CUSTOMERS}" for i in range(3)]
        with imap.client() as client:
            for message_id in ids:
                client.append(name, crlf(make_message(message_id, sender=f"x@{CUSTOMERS}")))
        env = {
            **base,
            "MAILSUPPORT_DATA_DIR": str(tmp_path / name),
            "MAILSUPPORT_IMAP_FOLDER": name,
        }
        return env, ids

    env, _ = new_desk("Calibration")
    whole = forks.run(["poll"], env)
    assert whole.code == 0 and "read 3, new tickets 3" in whole.output, whole.output
    fates = []
    for iteration in range(1, 7):
        where = f"seed {SEED + 6}, iteration {iteration}"
        env, ids = new_desk(f"Desk{iteration}")
        delay = rng.uniform(0.0, whole.seconds)
        killed = forks.run(["poll"], env, kill_after=delay)
        after = forks.run(["poll"], env)
        fates.append(f"{delay:.3f} s: {killed}")
        assert after.code == 0, f"{where}: {killed}, then {after}\n{after.output}"
        store = Store.open(f"sqlite:///{tmp_path / f'Desk{iteration}' / 'mailsupport.db'}")
        try:
            with store.read() as session:
                stored = session.exec(select(Message.message_id)).all()
                tickets = session.exec(select(Ticket.id)).all()
                queued = session.exec(select(OutboxItem.id)).all()
        finally:
            store.engine.dispose()
        assert sorted(stored) == ids and len(tickets) == 3, f"{where}: {stored}"
        assert queued == [], f"{where}: mail found at the first run is not acknowledged"
        with imap.client() as client:
            client.select_folder(f"Desk{iteration}", readonly=True)
            assert client.search(["UNSEEN"]) == [], f"{where}: left unflagged"
    print(f"\nfirst runs killed at {fates}")


@pytest.mark.slow
def test_imap_start_all_files_the_history_without_acknowledging_it(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    """Found by the test above: with IMAP_START=all the first poll acknowledged every old
    message in the mailbox (as Zammad #539 did), though the README promises it files the
    history unanswered, as with `unseen` and `since:`."""
    for i in range(2):
        imap.append(crlf(make_message(f"old{i}@{CUSTOMERS}", sender=f"old{i}@{CUSTOMERS}")))
    env = desk_env(settings, imap, smtp_server, imap_start="all")
    first = forks.run(["poll"], env)
    assert first.code == 0 and "read 2, new tickets 2" in first.output, first.output
    with store.read() as session:
        decisions = session.exec(select(Message.ack_decision)).all()
    assert all("before mailsupport started reading it" in d for d in decisions), decisions
    assert unsent(store) == 0 and smtp_server.arrivals == []
    imap.append(crlf(make_message(f"new@{CUSTOMERS}", sender=f"new@{CUSTOMERS}")))
    second = forks.run(["poll"], env)
    assert "read 1, new tickets 1" in second.output and "outbox: 1 sent" in second.output


# ------------------------------------------------------------------------------------------
# kill -9 during outbox delivery
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_random_points_during_outbox_flush(
    settings: Settings, store: Store, smtp_server: SmtpServer, forks: Forkserver
) -> None:
    """Acknowledgements are queued by intake in this process; `outbox flush` runs are
    SIGKILLed at random moments while the server sometimes greylists, drops the line, or
    takes a message and never answers (a timeout after accepting: the sender must send it
    again). Each acknowledgement is queued once and every ticket gets exactly one."""
    rng = random.Random(SEED + 1)
    desk = load_settings(
        data_dir=settings.data_dir, database_url=settings.db_url,
        support_address=settings.support_address, support_name=settings.support_name,
        smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_security="none",
        smtp_timeout=1, ack_domain_limit=0,  # one domain, every ticket acknowledged
    )  # fmt: skip
    pipeline = Pipeline(desk, store)
    env = {
        "MAILSUPPORT_DATA_DIR": str(desk.data_dir),
        "MAILSUPPORT_DATABASE_URL": desk.db_url,
        "MAILSUPPORT_SUPPORT_ADDRESS": desk.support_address,
        "MAILSUPPORT_SMTP_HOST": smtp_server.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "1",
    }
    argv = ["-v", "outbox", "flush"]
    people: list[str] = []

    def new_mail(count: int) -> None:
        for _ in range(count):
            n = len(people)
            people.append(f"person{n}@{CUSTOMERS}")
            raw = make_message(f"f{n}@{CUSTOMERS}", subject=f"Question {n}", sender=people[-1])
            now = datetime.now(UTC)
            assert pipeline.ingest(Incoming(raw, "test", now), now).ack

    idle = forks.run(argv, env)
    assert idle.code == 0 and "nothing to send" in idle.output, idle.output
    new_mail(4)
    calibration = forks.run(argv, env)
    assert calibration.code == 0 and "4 sent" in calibration.output, calibration.output
    pace = Pace(idle.seconds, 0.0, (calibration.seconds - idle.seconds) / 4)
    kills, iteration, runs = 0, 0, []
    phases: Counter[str] = Counter()
    accepted: Counter[str] = Counter()  # Message-ID: accepted unconfirmed, so often
    while kills < KILLS[store.engine.dialect.name][1]:
        iteration += 1
        where = f"seed {SEED + 1}, iteration {iteration}"
        assert iteration < 60, f"{where}: kills keep missing\n{runs}"
        new_mail(rng.randint(1, 4))
        trouble = smtp_trouble(smtp_server, rng)
        with store.read() as session:
            waiting = session.exec(select(OutboxItem).where(OutboxItem.status == "queued")).all()
        if rng.random() < 0.15:  # takes one message, then never says so
            trouble = "accept, then silence"
            smtp_server.hold_data(only=rng.choice(waiting).recipients, accepted=True)
        delay, _ = pace.draw(rng, 0, len(waiting))
        arrivals = len(smtp_server.arrivals)
        run = forks.run(argv, env, kill_after=delay)
        pending_250 = unconfirmed(store, smtp_server, arrivals)
        accepted.update(pending_250)
        pace.learn(run, 0, len(waiting))
        runs.append(f"{where}: kill at {delay:.3f} s, smtp {trouble}: {run}")
        if run.killed:
            kills += 1
            phases["accepted, not recorded" if pending_250 else "other"] += 1
        else:
            assert run.code in (0, 75), f"{where}: {run}\n{run.output}"
        with store.read() as session:
            ids = session.exec(select(OutboxItem.ticket_id)).all()
        assert len(ids) == len(set(ids)) == len(people), f"{where}: acks queued {ids}"
        let_time_pass(store)

    where = f"seed {SEED + 1}, after {iteration} iterations"
    settle(
        forks, argv, env, store, smtp_server, lambda: unsent(store) == 0, where
    )  # fmt: skip
    arrived = check_delivery(store, smtp_server, where + "\n" + "\n".join(runs[-15:]))
    resent = check_resent(arrived, accepted, where)
    assert len(arrived) == len(people)
    with store.read() as session:
        recipients = sorted(r for i in session.exec(select(OutboxItem)) for r in i.recipients)
    assert recipients == sorted(people)
    print(
        f"\n{kills} kills in {iteration} runs ({dict(phases)}); {len(people)} acks, "
        f"{resent} arrived twice with the same Message-ID"
    )


# ------------------------------------------------------------------------------------------
# The IMAP server killed mid-FETCH
# ------------------------------------------------------------------------------------------


def batch_bytes(server: ImapServer, store: Store, batch: int, size: int) -> int:
    """The size of the messages the next poll will FETCH in its `batch`-th batch."""
    with store.read() as session:
        last_uid = session.exec(select(ImapFolder.last_uid)).one()
    with server.client() as client:
        client.select_folder("INBOX", readonly=True)
        uids = sorted(u for u in client.search(["ALL"]) if u > last_uid)
        wanted = uids[(batch - 1) * size : batch * size]
        sizes = client.fetch(wanted, [b"RFC822.SIZE"]) if wanted else {}
    return sum(int(data[b"RFC822.SIZE"]) for data in sizes.values())


@pytest.mark.slow
def test_imap_server_killed_mid_fetch_at_random_offsets(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    """The server dies part way through its answer to a FETCH of message bodies (the first
    batch or a later one), at a random byte, and comes back: the poll exits 75, what was
    committed stays, the rest is taken on the next run, each message once."""
    rng = random.Random(SEED + 2)
    traffic = Traffic(rng)
    proxy = CutProxy((imap.host, imap.port))
    try:
        env = desk_env(settings, imap, smtp_server)
        env["MAILSUPPORT_IMAP_PORT"] = str(proxy.port)
        assert forks.run(["poll"], env).code == 0  # the ledger starts at the empty mailbox
        cuts = []
        for iteration in range(1, 9):
            where = f"seed {SEED + 2}, iteration {iteration}"
            traffic.deliver(imap, rng.randint(3, 7))
            batch = rng.randint(1, 2)  # die in the answer to the first or second FETCH
            # At a byte within the bodies that FETCH returns (its answer is a little longer).
            offset = rng.randint(0, max(1, batch_bytes(imap, store, batch, 3)))
            proxy.arm(offset, b"BODY.PEEK[]", imap.kill, occurrence=batch)
            before = stored_count(store)
            run = forks.run(["poll"], env)
            if proxy.cut.is_set():
                assert run.code == 75, f"{where}: {run}\n{run.output}"
                assert "IMAP server" in run.output, run.output
                assert not imap.running
                imap.restart()
            else:  # fewer batches than asked for: the run went through
                assert run.code == 0, f"{where}: {run}\n{run.output}"
            fate = "mid-FETCH" if proxy.mid_answer else "later" if proxy.cut.is_set() else "none"
            cuts.append((batch, offset, fate, stored_count(store) - before))
            check_desk(store, traffic, where)
        settle(
            forks, ["poll"], env, store, smtp_server,
            lambda: mailbox(imap).unseen == 0 and unsent(store) == 0, f"seed {SEED + 2}",
        )  # fmt: skip
    finally:
        proxy.close()
    where = f"seed {SEED + 2}: cuts (FETCH, byte, where, stored) {cuts}"
    check_desk(store, traffic, where, complete=True)
    check_mailbox_done(store, imap, where)
    check_delivery(store, smtp_server, where)
    assert sum(fate == "mid-FETCH" for _, _, fate, _ in cuts) >= 6, where
    print(f"\n{where}")


# ------------------------------------------------------------------------------------------
# SMTP timeouts, and SMTP faults during poll
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("accepted", [False, True], ids=["no-answer", "accepted-no-answer"])
def test_an_smtp_timeout_is_temporary_and_does_not_hold_up_the_rest(
    accepted: bool, settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    desk = load_settings(
        data_dir=settings.data_dir, database_url=settings.db_url,
        support_address=settings.support_address, smtp_host=smtp_server.host,
        smtp_port=smtp_server.port, smtp_security="none", smtp_timeout=1,
    )  # fmt: skip
    pipeline = Pipeline(desk, store)
    now = datetime.now(UTC)
    for who in ["one", "two", "three"]:
        raw = make_message(f"{who}@{CUSTOMERS}", sender=f"{who}@{CUSTOMERS}")
        pipeline.ingest(Incoming(raw, "test", now), now)
    smtp_server.hold_data(only=[f"two@{CUSTOMERS}"], accepted=accepted)
    began = time.monotonic()
    assert deliver_due(store, desk, lambda: now) == Counter(sent=2, retry=1)
    assert time.monotonic() - began < 10  # one SMTP_TIMEOUT, not a hang
    with store.read() as session:
        items = session.exec(select(OutboxItem)).all()
    [two] = [i for i in items if i.recipients == [f"two@{CUSTOMERS}"]]
    assert two.status == "queued" and "timed out" in two.last_error.lower(), two.last_error

    smtp_server.accept()
    assert deliver_due(store, desk, lambda: two.next_attempt_at) == Counter(sent=1)
    arrived = check_delivery(store, smtp_server, "after the timeout")
    # Accepted but never confirmed: sent again, the same bytes under the same Message-ID.
    assert arrived[two.message_id] == (2 if accepted else 1)
    assert sum(arrived.values()) == (4 if accepted else 3)


@pytest.mark.slow
def test_smtp_4xx_5xx_and_timeouts_never_hold_up_intake(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    env = desk_env(settings, imap, smtp_server, smtp_timeout=1)
    assert forks.run(["poll"], env).code == 0
    replies = {
        f"grey@{CUSTOMERS}": "451 4.7.1 Greylisted, try again later",
        f"gone@{CUSTOMERS}": "550 5.1.1 No such user",
    }
    # Greylisted, refused for good, never answered, and one that goes through.
    smtp_server.behaviour = _Behaviour(
        rcpt_each=replies, hold=True, rcpt_only=frozenset({f"slow@{CUSTOMERS}"})
    )
    with imap.client() as client:
        for who in ["grey", "gone", "slow", "fine"]:
            raw = make_message(f"{who}@{CUSTOMERS}", sender=f"{who}@{CUSTOMERS}")
            client.append("INBOX", crlf(raw))
    run = forks.run(["poll"], env)
    assert run.code == 0, run.output
    assert "read 4, new tickets 4" in run.output
    assert "outbox: 1 failed, 2 retry, 1 sent" in run.output
    assert mailbox(imap).unseen == 0  # taken and flagged whatever SMTP said
    with store.read() as session:
        status = {i.recipients[0].split("@")[0]: i.status for i in session.exec(select(OutboxItem))}
        [failure] = session.exec(select(TicketEvent).where(TicketEvent.action == "delivery-failed"))
    assert status == {"grey": "queued", "gone": "failed", "slow": "queued", "fine": "sent"}
    assert "550 5.1.1 No such user" in failure.detail

    smtp_server.accept()
    let_time_pass(store)
    again = forks.run(["poll"], env)
    assert "read 0," in again.output and "outbox: 2 sent" in again.output, again.output
    arrived = Counter(a.rcpt_tos[0].split("@")[0] for a in smtp_server.arrivals)
    assert arrived == {"grey": 1, "slow": 1, "fine": 1}  # "gone" failed for good: never sent


# ------------------------------------------------------------------------------------------
# The database locked by another writer
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_locked_database_exits_75_and_the_mail_waits_on_the_server(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    rng = random.Random(SEED + 3)
    traffic = Traffic(rng)
    env, patch = impatient(store, desk_env(settings, imap, smtp_server), 0.3)
    assert forks.run(["poll"], env, patch=patch).code == 0
    traffic.deliver(imap, 2)
    assert forks.run(["poll"], env, patch=patch).code == 0

    # Locked from the start: nothing is taken, nothing is flagged, exit 75 (cron retries).
    traffic.deliver(imap, 3)
    with write_lock_held(store):
        locked = forks.run(["poll"], env, patch=patch)
    assert locked.code == 75, locked.output
    # SQLite: "database is locked by another process (...); try again"; PostgreSQL:
    # "database unavailable: canceling statement due to lock timeout".
    assert locked.output.startswith("mailsupport: database "), locked.output
    assert mailbox(imap).unseen == 3
    check_desk(store, traffic, "while locked")
    assert stored_count(store) == 2
    # The locker's session may take a moment to end on a busy machine: cron runs again.
    for _ in range(10):
        ok = forks.run(["poll"], env, patch=patch)
        if ok.code != 75:
            break
        time.sleep(0.5)
    assert ok.code == 0 and "read 3," in ok.output, ok.output

    # Locked at a random moment of a run, for longer than the run is willing to wait.
    full = ok.seconds
    outcomes = []
    for iteration in range(1, 6):
        where = f"seed {SEED + 3}, iteration {iteration}"
        traffic.deliver(imap, rng.randint(3, 6))
        delay, holding = rng.uniform(0.0, full * 1.5), threading.Event()

        def lock_later(delay: float = delay, holding: threading.Event = holding) -> None:
            time.sleep(delay)
            with write_lock_held(store):
                holding.set()
                time.sleep(0.8)

        locker = threading.Thread(target=lock_later)
        locker.start()
        run = forks.run(["poll"], env, patch=patch)
        locker.join()
        assert run.code in (0, 75), f"{where}: {run}\n{run.output}"
        outcomes.append(run.code)
        check_desk(store, traffic, where)
        let_time_pass(store)
    settle(
        forks, ["poll"], env, store, smtp_server,
        lambda: mailbox(imap).unseen == 0 and unsent(store) == 0, f"seed {SEED + 3}",
    )  # fmt: skip
    where = f"seed {SEED + 3}: exits {outcomes}"
    check_desk(store, traffic, where, complete=True)
    check_mailbox_done(store, imap, where)
    check_delivery(store, smtp_server, where)
    print(f"\nruns locked at a random moment exited {outcomes}")


# ------------------------------------------------------------------------------------------
# The attachment store's disk full
# ------------------------------------------------------------------------------------------


def attachment_mail(name: str, blob: bytes) -> bytes:
    return crlf(make_message(
        f"{name}@{CUSTOMERS}", sender=f"{name}@{CUSTOMERS}", subject=f"Logs from {name}",
        attachments=[("logs.bin", "application/octet-stream", blob)],
    ))  # fmt: skip


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()] if root.is_dir() else []


@pytest.mark.slow
def test_an_unwritable_attachment_store_leaves_the_message_on_the_server(
    settings: Settings, store: Store, imap: ImapServer, smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:  # fmt: skip
    """The attachments directory cannot be made (here: a file stands where it should be, so
    mkdir fails with ENOTDIR, which even root cannot get around): the poll stops with exit
    75, the message stays unread on the server, and is taken once the disk is fixed."""
    env = desk_env(settings, imap, smtp_server, imap_batch=1, attachments="files")
    assert forks.run(["poll"], env).code == 0
    root = settings.data_dir / "attachments"
    assert not root.exists()
    root.write_bytes(b"not a directory")
    blob = random.Random(SEED + 4).randbytes(20000)
    with imap.client() as client:
        client.append("INBOX", crlf(make_message(f"before@{CUSTOMERS}", sender=f"a@{CUSTOMERS}")))
        client.append("INBOX", attachment_mail("logs", blob))
        client.append("INBOX", crlf(make_message(f"after@{CUSTOMERS}", sender=f"b@{CUSTOMERS}")))
    full = forks.run(["poll"], env)
    assert full.code == 75, full.output
    assert "cannot store an attachment" in full.output, full.output
    assert mailbox(imap).unseen == 2
    with store.read() as session:
        stored = session.exec(select(Message.message_id).where(Message.direction == "in")).all()
        assert stored == [f"before@{CUSTOMERS}"]
        assert len(session.exec(select(RawMessage)).all()) == 1  # no raw bytes of the others
        assert session.exec(select(Attachment)).all() == []
        assert len(session.exec(select(OutboxItem)).all()) == 1

    root.unlink()  # space is freed
    again = forks.run(["poll"], env)
    assert again.code == 0 and "read 2, new tickets 2" in again.output, again.output
    digest = hashlib.sha256(blob).hexdigest()
    assert (root / digest[:2] / digest).read_bytes() == blob
    check_mailbox_done(store, imap, "after the fix")
    assert len(check_delivery(store, smtp_server, "after the fix")) == 3


@pytest.mark.slow
def test_an_attachment_cut_off_midway_leaves_nothing_half_written(
    settings: Settings,
    store: Store,
    imap: ImapServer,
    smtp_server: SmtpServer,
    forks: Forkserver,
) -> None:
    """The disk fills up while an attachment is being written: the process may write only
    so many bytes per file (RLIMIT_FSIZE, which binds root too), so the write stops part way
    with EFBIG, as it would with ENOSPC. No partial file is left, under its name or any
    other; nothing of the message is stored; it is taken whole once there is room."""
    env = desk_env(settings, imap, smtp_server, attachments="files")
    assert forks.run(["poll"], env).code == 0
    # The limit must not stop the database first: on SQLite its files are local, so start
    # from an empty WAL and allow more than the database file holds. The message must fit
    # SQLite's page cache (2 MB) so that nothing of it reaches the WAL before the commit.
    database = 0
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert store.engine.url.database
        database = Path(store.engine.url.database).stat().st_size
    limit = database + 256 * 1024
    blob = random.Random(SEED + 5).randbytes(limit + 200 * 1024)
    raw = attachment_mail("big", blob)
    assert len(raw) < 1_800_000, "the test's message outgrew SQLite's page cache"
    imap.append(raw)
    cut = forks.run(["poll"], env, file_size_limit=limit)
    assert cut.code == 75, cut.output
    assert "cannot store an attachment" in cut.output and "File too large" in cut.output
    root = settings.data_dir / "attachments"
    assert files_under(root) == []  # the partial file was removed, none has the digest name
    assert mailbox(imap).unseen == 1
    assert stored_count(store) == 0

    again = forks.run(["poll"], env)
    assert again.code == 0 and "read 1, new tickets 1" in again.output, again.output
    digest = hashlib.sha256(blob).hexdigest()
    assert [p.name for p in files_under(root)] == [digest]
    assert (root / digest[:2] / digest).read_bytes() == blob
    check_mailbox_done(store, imap, "after the fix")
