"""The outbox against a real SMTP server on loopback and a real database.

Time is passed in (`now`), so backoff and SMTP_MAX_AGE are tested by moving the clock, not
by sleeping.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import shutil
import socket
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlmodel import select

from mailsupport.compose import Sender, ThreadParent, compose
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, NotFoundError, UsageError
from mailsupport.mail import Address
from mailsupport.outbox import queue as outbox
from mailsupport.outbox.admin import item_dict, list_items, retry
from mailsupport.outbox.delivery import (
    BACKOFF_MAX,
    _candidates,
    _claim,
    _claim_statement,
    _record,
    backoff,
    deliver_due,
    flush,
)
from mailsupport.parsing import parse
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem, TicketEvent
from mailsupport.templating import Templates
from tests.support.mailfactory import make_message
from tests.support.outbox import ANNA, SUPPORT, T0, at, get, new_ticket, plain_message, queue
from tests.support.smtpserver import SmtpServer, self_signed_cert


def half(_: Any = None) -> float:
    return 0.5


def events(store: Store, ticket_id: int) -> list[TicketEvent]:
    with store.read() as session:
        query = select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
        return list(session.exec(query.where(TicketEvent.action == "delivery-failed")).all())


# -- queueing --------------------------------------------------------------------------------


def test_delivered_bytes_equal_the_queued_bytes_and_the_envelope_is_right(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    inbound = parse(make_message("q1@customer.example.org", subject="Не могу войти"))
    composed = compose(
        "ack", sender=Sender("Example Support", SUPPORT), to=[Address("Анна", ANNA)],
        ticket_number=ticket_id, ticket_subject="Не могу войти",
        parent=ThreadParent.from_inbound(inbound), language="ru", templates=Templates(),
        secret=b"s" * 32, now=T0,
    )  # fmt: skip
    composed.message["Bcc"] = "hidden@example.net"
    with store.write() as session:
        item_id = outbox.queue(
            session, ticket_id=ticket_id, kind="ack", message=composed.message,
            message_id=composed.message_id, mail_from=SUPPORT,
            recipients=[ANNA, "hidden@example.net", ANNA], now=T0,
        )  # fmt: skip
    queued = get(store, item_id)
    assert queued.recipients == [ANNA, "hidden@example.net"]
    assert b"hidden@example.net" not in queued.data  # Bcc stays in the envelope only
    assert "Bcc" in composed.message  # the caller's message is left alone

    assert deliver_due(store, smtp_settings, at(T0)) == Counter(sent=1)

    [arrival] = smtp_server.arrivals
    assert arrival.data == queued.data
    assert arrival.mail_from == SUPPORT
    assert arrival.rcpt_tos == (ANNA, "hidden@example.net")
    received = email.message_from_bytes(arrival.data, policy=email.policy.default)
    assert received["Message-ID"] == f"<{composed.message_id}>"
    assert received["In-Reply-To"] == "<q1@customer.example.org>"
    assert "Не могу войти" in str(received["Subject"])
    sent = get(store, item_id)
    assert (sent.status, sent.sent_at, sent.attempts, sent.claimed_until) == ("sent", T0, 1, None)
    assert sent.recipient_status == {ANNA: "sent", "hidden@example.net": "sent"}


def test_a_plain_message_with_lf_lines_and_a_lone_dot_arrives_byte_for_byte(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    item_id = queue(store, new_ticket(store), "dot@example.com")
    data = get(store, item_id).data
    assert b"\r\n.\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    deliver_due(store, smtp_settings, at(T0))
    assert smtp_server.arrivals[0].data == data


def test_queue_writes_in_the_callers_transaction(store: Store) -> None:
    ticket_id = new_ticket(store)
    with pytest.raises(RuntimeError), store.write() as session:
        outbox.queue(
            session, ticket_id=ticket_id, kind="ack", message=plain_message("x@example.com"),
            message_id="<x@example.com>", mail_from=SUPPORT, recipients=[ANNA], now=T0,
        )  # fmt: skip
        raise RuntimeError("the ticket change failed")
    with store.read() as session:
        assert list_items(session) == []


def test_queue_refuses_a_message_id_that_is_not_the_messages(store: Store) -> None:
    ticket_id = new_ticket(store)
    with store.write() as session, pytest.raises(ValueError, match="Message-ID"):
        outbox.queue(
            session, ticket_id=ticket_id, kind="ack", message=plain_message("a@example.com"),
            message_id="b@example.com", mail_from=SUPPORT, recipients=[ANNA], now=T0,
        )  # fmt: skip


# -- one connection per run ------------------------------------------------------------------


def test_a_batch_shares_one_connection_and_a_drop_means_a_new_one(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    # Three tickets: a later message of one ticket would wait behind a dropped one.
    first, dropped, last = (
        queue(store, new_ticket(store), "m1@example.com"),
        queue(store, new_ticket(store), "m2@example.com", ["bob@example.org"]),
        queue(store, new_ticket(store), "m3@example.com"),
    )
    smtp_server.drop_at("data", only=["bob@example.org"])
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(sent=2, retry=1)
    one, three = smtp_server.arrivals
    assert smtp_server.count("m1@example.com") == smtp_server.count("m3@example.com") == 1
    assert one.peer != three.peer  # reconnected after the drop
    assert get(store, first).status == get(store, last).status == "sent"
    assert get(store, dropped).status == "queued"

    smtp_server.accept()
    for n in range(3):
        queue(store, new_ticket(store), f"n{n}@example.com")
    assert deliver_due(store, smtp_settings, at(T0 + timedelta(hours=1))) == Counter(sent=4)
    assert len({a.peer for a in smtp_server.arrivals[2:]}) == 1


# -- temporary failures ----------------------------------------------------------------------


def test_a_4xx_is_retried_later_with_backoff_then_delivered(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    item_id = queue(store, new_ticket(store), "grey@example.com")
    smtp_server.refuse_rcpt("451 4.7.1 Greylisted, try again later")
    assert deliver_due(store, smtp_settings, at(T0), rand=half) == Counter(retry=1)
    item = get(store, item_id)
    assert item.status == "queued"
    assert item.attempts == 1
    assert item.next_attempt_at == T0 + timedelta(seconds=45)  # 1 min, shortened by a quarter
    assert item.last_error == f"{ANNA}: 451 4.7.1 Greylisted, try again later"

    # Not due yet: nothing is tried, not even a connection.
    smtp_server.accept()
    assert deliver_due(store, smtp_settings, at(T0 + timedelta(seconds=44))) == Counter()
    assert smtp_server.arrivals == []

    assert deliver_due(store, smtp_settings, at(item.next_attempt_at)) == Counter(sent=1)
    assert smtp_server.count("grey@example.com") == 1
    assert get(store, item_id).attempts == 2


def test_backoff_doubles_from_a_minute_to_an_hour_with_jitter() -> None:
    longest = [backoff(n, rand=lambda: 1.0) for n in range(1, 10)]
    assert [d.total_seconds() / 60 for d in longest] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    shortest = backoff(3, rand=lambda: 0.0)
    assert shortest == timedelta(minutes=2)
    assert backoff(1000) <= BACKOFF_MAX


def test_smtp_down_longer_than_a_poll_cycle_loses_nothing(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    ids = [queue(store, ticket_id, f"down{n}@example.com") for n in range(5)]
    smtp_server.stop()
    now = T0
    for _ in range(30):  # half an hour of one-minute daemon cycles with the server away
        counts = deliver_due(store, smtp_settings, at(now))
        assert set(counts) <= {"retry"}
        now += timedelta(minutes=1)
    items = [get(store, i) for i in ids]
    assert all(i.status == "queued" and i.attempts >= 3 for i in items)
    assert "cannot connect" in items[0].last_error
    assert events(store, ticket_id) == []  # waiting is not failing

    smtp_server.start()
    later = max(i.next_attempt_at for i in items)
    assert deliver_due(store, smtp_settings, at(later)) == Counter(sent=5)
    assert all(smtp_server.count(f"down{n}@example.com") == 1 for n in range(5))


def test_an_outage_with_many_tickets_waiting_counts_one_attempt_on_each(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    # One connection attempt for the whole claim; every item's outcome is still its own:
    # the ones queued past SMTP_MAX_AGE fail for good, the rest wait for their next try.
    short = smtp_settings.model_copy(update={"smtp_max_age": 3600})
    now = T0 + timedelta(minutes=90)
    old = [queue(store, new_ticket(store), f"old{n}@example.com", when=T0) for n in range(3)]
    young = [queue(store, new_ticket(store), f"new{n}@example.com", when=now) for n in range(9)]
    smtp_server.stop()
    assert deliver_due(store, short, at(now), rand=half) == Counter(retry=9, failed=3)
    for item_id in old:
        item = get(store, item_id)
        assert (item.status, item.attempts) == ("failed", 1)
        [event] = events(store, item.ticket_id)
        assert "gave up after 1.5 hours" in event.detail and "cannot connect" in event.detail
    for item_id in young:
        item = get(store, item_id)
        assert (item.status, item.attempts, item.claim_token) == ("queued", 1, None)
        assert item.next_attempt_at == now + timedelta(seconds=45)  # backoff(1) with rand 0.5
        assert "cannot connect" in item.last_error
        assert events(store, item.ticket_id) == []
    smtp_server.start()
    assert deliver_due(store, short, at(now + timedelta(minutes=1))) == Counter(sent=9)


def test_a_flush_waits_for_a_server_that_never_answers_once_not_once_a_round(
    store: Store, smtp_settings: Settings
) -> None:
    """A server that takes the connection and never greets (hung, or behind a firewall that
    holds it): a flush of thousands of acknowledgements in rounds of 100 waited SMTP_TIMEOUT
    in every round, each round's items still counting their failed attempt."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def hold_connections() -> None:
        with contextlib.suppress(OSError):  # closed: the test is over
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=hold_connections, daemon=True).start()
    silent = smtp_settings.model_copy(
        update={"smtp_port": listener.getsockname()[1], "smtp_timeout": 1}
    )
    ids = [queue(store, new_ticket(store), f"hung{n}@example.com") for n in range(5)]
    try:
        counts = flush(store, silent, at(T0), batch=2)
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert counts == Counter(retry=5)
    # Three rounds, one attempt: its connection and the probe asking whether the port
    # speaks TLS (tlsprobe) when no greeting comes. Once a round, that was 6.
    assert len(held) == 2
    for item_id in ids:
        item = get(store, item_id)
        assert (item.status, item.attempts) == ("queued", 1)
        assert "cannot connect" in item.last_error


def test_past_max_age_a_temporary_failure_becomes_failed(
    store: Store, settings: Settings, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    short = smtp_settings.model_copy(update={"smtp_max_age": 3600})
    ticket_id = new_ticket(store)
    item_id = queue(store, ticket_id, "old@example.com")
    smtp_server.refuse_data("452 4.3.1 Insufficient system storage")
    now, runs = T0, 0
    while get(store, item_id).status == "queued":
        item = get(store, item_id)
        assert item.next_attempt_at <= T0 + timedelta(hours=1)  # the last try is at the deadline
        now = item.next_attempt_at
        deliver_due(store, short, at(now), rand=lambda: 1.0)
        runs += 1
        assert runs < 20
    item = get(store, item_id)
    assert item.status == "failed"
    assert now == T0 + timedelta(hours=1)
    assert runs == 7  # after 1, 2, 4, 8, 16 and 32 minutes, then at the deadline
    [event] = events(store, ticket_id)
    assert "gave up after 1.0 hours: 452 4.3.1 Insufficient system storage" in event.detail
    assert "old@example.com" in event.detail


def test_a_connection_dropped_mid_data_is_retried(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    item_id = queue(store, new_ticket(store), "drop@example.com")
    smtp_server.drop_at("data")
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(retry=1)
    assert smtp_server.arrivals == []
    assert "connection" in get(store, item_id).last_error
    smtp_server.accept()
    assert deliver_due(store, smtp_settings, at(T0 + timedelta(minutes=1))) == Counter(sent=1)
    assert smtp_server.count("drop@example.com") == 1


# -- permanent failures ----------------------------------------------------------------------


def test_a_5xx_fails_at_once_and_is_recorded_on_the_ticket(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    item_id = queue(store, ticket_id, "spam@example.com")
    smtp_server.refuse_data("554 5.7.1 Message rejected as spam")
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(failed=1)
    item = get(store, item_id)
    assert (item.status, item.attempts, item.sent_at) == ("failed", 1, None)
    assert item.last_error == f"{ANNA}: 554 5.7.1 Message rejected as spam"
    [event] = events(store, ticket_id)
    assert event.detail == (
        f"reply <spam@example.com> not delivered: {ANNA}: 554 5.7.1 Message rejected as spam"
    )
    assert event.at == T0
    # Failed stays failed: later runs leave it alone.
    smtp_server.accept()
    assert deliver_due(store, smtp_settings, at(T0 + timedelta(days=1))) == Counter()


def test_some_recipients_refused_the_others_get_it_once(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    gone, busy = "gone@example.org", "busy@example.org"
    item_id = queue(store, ticket_id, "part@example.com", [ANNA, gone, busy])
    smtp_server.refuse_each({gone: "550 5.1.1 No such user", busy: "450 4.2.1 Mailbox busy"})
    assert deliver_due(store, smtp_settings, at(T0), rand=half) == Counter(retry=1)
    [first] = smtp_server.arrivals
    assert first.rcpt_tos == (ANNA,)
    item = get(store, item_id)
    assert item.status == "queued"
    assert item.recipient_status == {ANNA: "sent", gone: "550 5.1.1 No such user"}
    [event] = events(store, ticket_id)
    assert f"{gone}: 550 5.1.1 No such user" in event.detail

    smtp_server.accept()
    assert deliver_due(store, smtp_settings, at(T0 + timedelta(hours=1))) == Counter(sent=1)
    second = smtp_server.arrivals[1]
    assert second.rcpt_tos == (busy,)  # neither Anna again, nor the refused address
    assert second.data == first.data
    item = get(store, item_id)
    assert item.status == "sent"
    assert item.recipient_status[busy] == "sent"


def test_every_recipient_refused_for_good_fails(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    item_id = queue(store, ticket_id, "none@example.com", ["a@example.org", "b@example.org"])
    smtp_server.refuse_rcpt("550 5.1.1 No such user")
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(failed=1)
    assert get(store, item_id).status == "failed"
    [event] = events(store, ticket_id)
    assert "a@example.org, b@example.org: 550 5.1.1 No such user" in event.detail


def test_retry_puts_a_failed_item_back_in_the_queue(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    item_id = queue(store, new_ticket(store), "again@example.com")
    smtp_server.refuse_rcpt("550 5.2.1 Mailbox disabled")
    deliver_due(store, smtp_settings, at(T0))
    assert get(store, item_id).status == "failed"

    later = T0 + timedelta(days=5)
    with store.write() as session:
        retry(session, item_id, later)
    item = get(store, item_id)
    assert (item.status, item.next_attempt_at, item.recipient_status) == ("queued", later, {})
    smtp_server.accept()
    assert deliver_due(store, smtp_settings, at(later)) == Counter(sent=1)
    assert smtp_server.count("again@example.com") == 1

    with store.write() as session, pytest.raises(UsageError, match="sent"):
        retry(session, item_id, later)
    with store.write() as session, pytest.raises(NotFoundError):
        retry(session, 999, later)


# -- claims: crashes and concurrent senders --------------------------------------------------


def test_a_sender_that_died_after_claiming_is_replaced_after_its_lease(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    item_id = queue(store, new_ticket(store), "crash@example.com")
    lease = timedelta(minutes=10)
    [claimed] = _claim(store, T0, 100, lease, "dead-sender")  # ...and then it "dies"
    assert claimed.id == item_id

    assert deliver_due(store, smtp_settings, at(T0 + timedelta(minutes=5))) == Counter()
    assert smtp_server.arrivals == []
    after = T0 + lease + timedelta(seconds=1)
    assert deliver_due(store, smtp_settings, at(after)) == Counter(sent=1)
    [arrival] = smtp_server.arrivals
    assert arrival.data == get(store, item_id).data
    assert smtp_server.count("crash@example.com") == 1


def test_two_concurrent_senders_never_send_an_item_twice(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ids = [f"c{n}@example.com" for n in range(24)]
    for message_id in ids:  # a ticket each: one ticket's mail is sent by one sender in order
        queue(store, new_ticket(store), message_id)
    start = threading.Barrier(2, timeout=10)
    totals: list[Counter[str]] = []
    errors: list[BaseException] = []

    def sender() -> None:
        own = Store.open(smtp_settings.db_url)  # a process of its own, as far as the DB sees
        total: Counter[str] = Counter()
        try:
            start.wait()
            for _ in range(10):
                total += deliver_due(own, smtp_settings, at(T0), limit=3)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)
        finally:
            own.engine.dispose()
            totals.append(total)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert all(not thread.is_alive() for thread in threads)
    deliver_due(store, smtp_settings, at(T0))  # whatever both left (none, usually)
    assert Counter(smtp_server.count(m) for m in ids) == Counter({1: len(ids)})
    assert sum(t["sent"] for t in totals) <= len(ids)
    print("sent by each sender:", [t["sent"] for t in totals])


def test_a_claim_takes_an_item_only_with_every_earlier_one_of_its_ticket(store: Store) -> None:
    # The claim is one statement for all candidates; the order rule is inside it. A
    # candidate list without a ticket's first item (another sender locked it, on
    # PostgreSQL) or with it not due must not let the ticket's later items go.
    first, second, third = (new_ticket(store) for _ in range(3))
    a1, a2, a3 = (queue(store, first, f"a{n}@example.com") for n in (1, 2, 3))
    note = queue(store, first, "note@example.com", kind="notification")  # keeps no order
    b1, b2 = (queue(store, second, f"b{n}@example.com") for n in (1, 2))
    c1, c2 = (queue(store, third, f"c{n}@example.com") for n in (1, 2))
    with store.write() as session:  # the third ticket's first item waits for a retry
        waiting = session.get(OutboxItem, c1)
        assert waiting is not None
        waiting.next_attempt_at = T0 + timedelta(hours=1)
        session.add(waiting)
    lease = timedelta(minutes=10)
    with store.write() as session:
        claim = _claim_statement(T0, lease, "ours")
        ids = [a2, a3, note, b1, b2, c1, c2]  # a1 left out
        taken = set(session.execute(claim, {"ids": ids}).scalars())
    assert taken == {note, b1, b2}
    claimed = {i: get(store, i).claim_token for i in (a1, a2, a3, note, b1, b2, c1, c2)}
    assert claimed == {a1: None, a2: None, a3: None, note: "ours", b1: "ours", b2: "ours",
                       c1: None, c2: None}  # fmt: skip
    with store.write() as session:  # with its first item, the first ticket goes whole
        again = _claim_statement(T0, lease, "again")
        assert set(session.execute(again, {"ids": [a1, a2, a3]}).scalars()) == {a1, a2, a3}


def test_a_flush_walks_the_queue_once_not_once_a_round(store: Store) -> None:
    # Each round of a flush reads on from the last item the round before took. On SQLite
    # it walks the ids from there: by the index on status and due time it read every due
    # item and sorted them all for the first 100, each round again (17 s for 46,718).
    tickets = [new_ticket(store) for _ in range(3)]
    ids = [queue(store, tickets[n % 3], f"walk{n}@example.com") for n in range(9)]
    with store.read() as session:
        dialect = session.get_bind().dialect.name
        later = session.exec(_candidates(T0, 100, after=ids[4], dialect=dialect)).all()
    assert [item for item, _ in later] == ids[5:]
    if dialect != "sqlite":
        return
    statement = _candidates(T0, 100, after=ids[4], dialect=dialect)
    with store.engine.connect() as conn:
        compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
        plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan


def test_a_large_flush_has_postgresql_count_the_outbox_first(
    store: Store, smtp_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Right after a poll queued thousands of acknowledgements PostgreSQL's statistics do not
    # know of them, and its plan for each round read every due item and sorted them all.
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's way through the queue does not depend on statistics")
    monkeypatch.setattr("mailsupport.outbox.delivery.ANALYZE_DUE", 5)

    def counted() -> float:
        with store.engine.connect() as conn:
            query = "SELECT reltuples FROM pg_class WHERE oid = 'outbox'::regclass"
            return float(conn.exec_driver_sql(query).scalar_one())

    for n in range(6):
        queue(store, new_ticket(store), f"count{n}@example.com")
    assert counted() < 0  # never counted
    assert flush(store, smtp_settings, at(T0)) == Counter(sent=6)
    assert counted() == 6


def test_a_claim_is_a_few_statements_whatever_its_size(store: Store) -> None:
    # One UPDATE a candidate cost a statement's round trip and server work each: thousands
    # in a poll that acknowledges thousands of new tickets.
    tickets = [new_ticket(store) for _ in range(5)]
    for n in range(60):
        queue(store, tickets[n % 5], f"many{n}@example.com")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        claimed = _claim(store, T0, 100, timedelta(minutes=10), "one-go")
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    assert len(claimed) == 60
    assert [c.id for c in claimed] == sorted(c.id for c in claimed)
    updates = [sql for sql in statements if sql.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1, updates
    assert len(statements) <= 4, statements


def test_a_claim_leaves_a_tickets_later_mail_when_another_sender_holds_its_first(
    store: Store, settings: Settings
) -> None:
    if store.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer at a time: no sender holds a row while another claims")
    first, second = new_ticket(store), new_ticket(store)
    a1, a2 = queue(store, first, "held1@example.com"), queue(store, first, "held2@example.com")
    b1 = queue(store, second, "free1@example.com")
    other = Store.open(settings.db_url)
    try:
        with other.engine.connect() as conn, conn.begin():  # another sender, mid-claim
            conn.execute(sa.select(OutboxItem.id).where(OutboxItem.id == a1).with_for_update())
            claimed = _claim(store, T0, 100, timedelta(minutes=10), "ours")
            assert [c.id for c in claimed] == [b1]  # a1 skipped as locked: a2 waits for it
    finally:
        other.engine.dispose()
    assert get(store, a2).claim_token is None


def test_recording_leaves_alone_an_item_another_sender_took_over(
    store: Store, smtp_settings: Settings
) -> None:
    # A sender whose lease ran out while it sent records nothing on the row the next one
    # holds ("lost"); the rest of its attempts, recorded in the same statements, stand.
    first, second = (queue(store, new_ticket(store), f"lease{n}@example.com") for n in (1, 2))
    lease = timedelta(minutes=10)
    mine = {c.id: c for c in _claim(store, T0, 100, lease, "slow")}
    later = T0 + lease + timedelta(minutes=1)
    with store.write() as session:  # the other sender's claim of the first, after the lease
        taken = session.execute(_claim_statement(later, lease, "next"), {"ids": [first]})
        assert list(taken.scalars()) == [first]
    attempts = [
        (mine[first], {ANNA: ("sent", "250 ok")}),
        (mine[second], {ANNA: ("temporary", "451 try later")}),
    ]
    outcomes = _record(store, smtp_settings, attempts, later, "slow", half)
    assert outcomes == [("lost", None), ("retry", None)]
    held = get(store, first)
    assert (held.claim_token, held.attempts, held.status, held.recipient_status) == (
        "next", 0, "queued", {},
    )  # fmt: skip
    retried = get(store, second)
    assert (retried.claim_token, retried.claimed_until, retried.attempts) == (None, None, 1)
    assert retried.last_error == f"{ANNA}: 451 try later"
    assert retried.next_attempt_at > later and retried.status == "queued"


def test_racing_claims_are_disjoint(store: Store, settings: Settings) -> None:
    """The claim itself, raced many times: no row is ever claimed by both."""
    for n in range(40):
        queue(store, new_ticket(store), f"r{n}@example.com")
    stores = [Store.open(settings.db_url) for _ in range(2)]
    lease = timedelta(minutes=10)
    try:
        for round_ in range(8):
            moment = T0 + round_ * lease * 2  # every earlier claim has run out
            start = threading.Barrier(2, timeout=10)
            won: list[set[int]] = [set(), set()]

            def claim(
                i: int, moment: datetime = moment, start: Any = start, won: Any = won
            ) -> None:
                start.wait()
                won[i] = {c.id for c in _claim(stores[i], moment, 30, lease, f"s{i}")}

            threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not won[0] & won[1]
            assert len(won[0] | won[1]) >= 30
    finally:
        for own in stores:
            own.engine.dispose()


# -- configuration ---------------------------------------------------------------------------


def test_no_smtp_host_is_a_configuration_error_only_when_mail_waits(
    store: Store, settings: Settings
) -> None:
    assert deliver_due(store, settings, at(T0)) == Counter()
    item_id = queue(store, new_ticket(store), "nohost@example.com")
    with pytest.raises(ConfigError, match=r"^MAILSUPPORT_SMTP_HOST is not set"):
        deliver_due(store, settings, at(T0))
    item = get(store, item_id)
    assert (item.status, item.attempts, item.claimed_until) == ("queued", 0, None)


def test_a_refused_login_leaves_the_mail_queued(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    smtp_server.stop()
    smtp_server.offer_login("support", "right")
    smtp_server.start()
    item_id = queue(store, new_ticket(store), "login@example.com")
    wrong = smtp_settings.model_copy(
        update={"smtp_user": "support", "smtp_password": SecretStr("wrong")}
    )
    with pytest.raises(ConfigError, match=r"SMTP login to .* as support failed: 535") as caught:
        deliver_due(store, wrong, at(T0))
    assert "MAILSUPPORT_SMTP_PASSWORD" in str(caught.value)
    assert "wrong" not in str(caught.value)
    item = get(store, item_id)
    assert (item.status, item.attempts, item.claimed_until) == ("queued", 0, None)
    assert "535" in item.last_error

    right = wrong.model_copy(update={"smtp_password": SecretStr("right")})
    assert deliver_due(store, right, at(T0)) == Counter(sent=1)


def test_starttls_verifies_the_certificate(
    store: Store, smtp_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = self_signed_cert(tmp_path)
    server = SmtpServer()
    server.offer_starttls(cert, key)
    server.start()
    try:
        tls = smtp_settings.model_copy(
            update={"smtp_port": server.port, "smtp_security": "starttls"}
        )
        item_id = queue(store, new_ticket(store), "tls@example.com")
        with pytest.raises(ConfigError, match=r"certificate of the SMTP server .* not trusted"):
            deliver_due(store, tls, at(T0))
        assert get(store, item_id).attempts == 0

        # A server that wants TLS, with security "none": a setting to fix, nothing fails.
        plain = tls.model_copy(update={"smtp_security": "none"})
        with pytest.raises(ConfigError, match=r"530 .*MAILSUPPORT_SMTP_SECURITY"):
            deliver_due(store, plain, at(T0))
        assert get(store, item_id).attempts == 0

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it, as an installed CA would be
        assert deliver_due(store, tls, at(T0)) == Counter(sent=1)
        assert server.count("tls@example.com") == 1
    finally:
        server.stop()


# -- listing ---------------------------------------------------------------------------------


def test_list_items_and_their_json(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    queue(store, ticket_id, "l1@example.com")
    queue(store, ticket_id, "l2@example.com", ["x@example.org"])
    smtp_server.refuse_rcpt("550 no", only=["x@example.org"])
    deliver_due(store, smtp_settings, at(T0))
    with store.read() as session:
        everything = [item_dict(i, n) for i, n in list_items(session)]
        failed = [item_dict(i, n) for i, n in list_items(session, status="failed")]
        with pytest.raises(UsageError):
            list_items(session, status="lost")
    assert [d["message_id"] for d in everything] == ["l1@example.com", "l2@example.com"]
    assert failed == [everything[1]]
    assert everything[0] == {
        "id": everything[0]["id"],
        "ticket": ticket_id,
        "message_id": "l1@example.com",
        "kind": "reply",
        "recipients": [ANNA],
        "recipient_status": {ANNA: "sent"},
        "status": "sent",
        "attempts": 1,
        "next_attempt_at": None,
        "last_error": "",
        "created_at": T0.isoformat(),
        "sent_at": T0.isoformat(),
    }


# -- who sends: `poll` after intake, and the daemon on its own schedule -------------------------


def test_poll_sends_the_outbox_after_intake(
    smtp_server: SmtpServer, smtp_settings: Settings, store: Store, env_for_cli, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from mailsupport.cli import app
    from tests.support.imapservers import PymapServer
    from tests.support.mailboxes import imap_env

    queue(store, new_ticket(store), "queued-1@example.com", when=datetime.now(UTC))
    waiting = CliRunner().invoke(app, ["status", "--offline", "--json"], env=env_for_cli)
    assert json.loads(waiting.output)["outbox"] == {"queued": 1, "failed": 0}
    with PymapServer() as imap:
        env = imap_env(env_for_cli, imap)
        env |= {
            "MAILSUPPORT_SMTP_HOST": smtp_server.host,
            "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
            "MAILSUPPORT_SMTP_SECURITY": "none",
        }
        result = CliRunner().invoke(app, ["poll"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(CliRunner().invoke(app, ["status", "--offline", "--json"], env=env).output)
    assert status["outbox"] == {"queued": 0, "failed": 0}
    assert "outbox: 1 sent" in result.output
    [arrival] = smtp_server.arrivals
    assert b"queued-1@example.com" in arrival.data


def test_the_daemon_sends_the_outbox_as_a_periodic_task(
    smtp_server: SmtpServer, smtp_settings: Settings, store: Store
) -> None:
    from mailsupport.daemon import NOTIFY, OUTBOX, periodic_tasks

    unsent = periodic_tasks(smtp_settings.model_copy(update={"smtp_host": ""}), store)
    assert [t.name for t in unsent] == [NOTIFY]
    queue(store, new_ticket(store), "queued-2@example.com", when=datetime.now(UTC))
    [task] = [t for t in periodic_tasks(smtp_settings, store) if t.name == OUTBOX]
    task.run()
    assert len(smtp_server.arrivals) == 1
    assert get(store, 1).status == "sent"


def test_a_claims_order_check_looks_up_each_tickets_queued_items_by_index(
    store: Store,
) -> None:
    # A claim takes an item only when no earlier queued item of its ticket waits. Checked
    # by scanning every queued item for each candidate, a queue of thousands (an SMTP
    # outage; a poll that just queued its acknowledgements, before the table's statistics
    # know of them) took seconds a claim, growing with the square of the queue.
    tickets = [new_ticket(store) for _ in range(30)]
    with store.write() as session:
        for n in range(300):
            outbox.queue(
                session, ticket_id=tickets[n % 30], kind="ack", now=T0, mail_from=SUPPORT,
                message=plain_message(f"q{n}@example.com"), message_id=f"q{n}@example.com",
                recipients=[ANNA],
            )  # fmt: skip
    seen: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        seen.append((args[2], args[3]))  # the SQL and parameters the driver gets

    with store.engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:  # small tables are scanned whatever their indexes: ask for them
            conn.exec_driver_sql("SET enable_seqscan = off")
        sa.event.listen(conn, "before_cursor_execute", capture)
        try:
            conn.execute(_candidates(T0 + timedelta(seconds=1), 100)).all()
        finally:
            sa.event.remove(conn, "before_cursor_execute", capture)
        sql, params = seen[-1]
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(explain + sql, params))
    assert "ix_outbox_queued_ticket_id" in plan, plan
    with store.write() as session:  # the first ticket's first item waits for a retry
        first = select(OutboxItem).where(OutboxItem.message_id == "q0@example.com")
        waiting = session.exec(first).one()
        waiting.next_attempt_at = T0 + timedelta(hours=1)
        session.add(waiting)
    with store.read() as session:
        taken = session.exec(_candidates(T0 + timedelta(seconds=1), 100)).all()
        rest = session.exec(
            select(OutboxItem.id).where(OutboxItem.ticket_id != tickets[0]).order_by(OutboxItem.id)
        ).all()
    assert [item for item, _ in taken] == list(rest[:100])  # none of the waiting ticket's
