"""Several pollers filing mail into one database at once (issue 20): on PostgreSQL intake
transactions run side by side, each claiming what it touches (store/claims.py); any other
writer still runs alone; and what they decide is what one poller decides."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.store import claims
from mailsupport.store.db import Store
from mailsupport.store.models import Ticket
from tests.support.mailfactory import mailing_list_archive, make_message
from tests.unit.test_pipeline import assert_one_ticket_per_conversation, tickets_by_message

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WAIT = 10.0


def postgresql_only(settings: Settings) -> None:
    if not settings.db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing runs side by side")


def in_thread(work: Callable[[], object]) -> tuple[threading.Thread, dict[str, object]]:
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = work()
        except BaseException as error:  # handed to the test
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def backend_pid(session: Session) -> int:
    return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def ticket_id(store: Store, outcome: Outcome) -> int:
    with store.read() as session:
        found = session.exec(select(Ticket.id).where(Ticket.number == outcome.ticket_number))
        return int(found.one())


def waits_for(store: Store, holder: int) -> bool:
    """Whether a connection waits for a lock that the backend `holder` holds."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE NOT granted"
        " AND CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))"
    )
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.text(query), {"holder": holder}).scalar())


@contextmanager
def two_pollers(settings: Settings) -> Iterator[tuple[Pipeline, Pipeline]]:
    """Two pipelines on connections of their own, as two pollers' processes have."""
    pipelines = (Pipeline(settings, Store.open(settings.db_url)) for _ in range(2))
    other, pipeline = pipelines
    try:
        yield other, pipeline
    finally:
        for p in (other, pipeline):
            p.close()
            p.store.engine.dispose()


def refiled(caplog: pytest.LogCaptureFixture) -> bool:
    return any("another writer was in the way" in r.getMessage() for r in caplog.records)


def waiting_on(store: Store, session: Session, work: Callable[[], object]) -> Callable[..., object]:
    """`work` started in a thread, returned once it waits for a lock that `session`'s
    transaction holds: call what is returned to join it and get its value (an error it
    raised fails the test)."""
    holder = backend_pid(session)
    thread, result = in_thread(work)
    wait_until(lambda: waits_for(store, holder))

    def finished(timeout: float = WAIT) -> object:
        thread.join(timeout)
        assert "error" not in result, result
        return result["value"]

    return finished


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_intake_runs_beside_intake_and_every_other_writer_alone(
    settings: Settings, store: Store
) -> None:
    postgresql_only(settings)

    def other_intake() -> str:
        with store.write(intake=True) as session:
            return str(session.execute(sa.text("SELECT 'filed'")).scalar())

    def agent() -> str:
        with store.write() as session:
            return str(session.execute(sa.text("SELECT 'answered'")).scalar())

    with store.write(intake=True):
        intake, intake_result = in_thread(other_intake)
        intake.join(WAIT)
        assert intake_result == {"value": "filed"}  # it did not wait for ours
        writer, writer_result = in_thread(agent)
        writer.join(0.5)
        assert writer.is_alive() and not writer_result  # an agent's write waits for intake
        # ... and intake that comes after it waits behind it (the agent is not starved).
        late, late_result = in_thread(other_intake)
        late.join(0.5)
        assert late.is_alive()
    writer.join(WAIT)
    late.join(WAIT)
    assert writer_result == {"value": "answered"}
    assert late_result == {"value": "filed"}


def test_a_batch_that_deadlocks_with_another_poller_is_filed_again(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    postgresql_only(settings)
    caplog.set_level(logging.INFO, logger="mailsupport.batching")
    with two_pollers(settings) as (other, pipeline):
        one, two = (
            ticket_id(store, pipeline.ingest(Incoming(make_message(f"{n}@x", subject=n), n), NOW))
            for n in ("one", "two")
        )
        replies = [
            Incoming(make_message(f"re-{n}@x", in_reply_to=f"<{n}@x>"), n) for n in ("one", "two")
        ]
        with other.store.write(intake=True) as session:  # another poller files into ticket two
            claims.ticket(session, two)
            # The batch holds ticket one and waits for two ...
            finished = waiting_on(
                store, session, lambda: pipeline.run(replies, lambda: NOW, batch_size=2)
            )
            # ... and now the other poller wants ticket one: a deadlock, which PostgreSQL
            # ends by failing the batch's transaction (it waited first).
            claims.ticket(session, one)
        assert finished(WAIT * 3) == {"reply": 2}
    assert refiled(caplog), "the batch was not filed again"
    placed = tickets_by_message(store)
    assert placed["re-one@x"] == placed["one@x"] and placed["re-two@x"] == placed["two@x"]


def test_a_deadlock_on_the_message_id_index_is_filed_again(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    # The batch's second message refers to one another poller is filing (its index row not
    # committed: the batch waits for it); that poller then files a reply to the batch's
    # first message (and waits for the batch's row). The waits cross inside the index.
    postgresql_only(settings)
    caplog.set_level(logging.INFO, logger="mailsupport.batching")
    batch = [
        Incoming(make_message("a@x", subject="A"), "a"),
        Incoming(make_message("b@x", subject="B", in_reply_to="<p@x>"), "b"),
    ]
    with two_pollers(settings) as (other, pipeline):
        with other.store.write(intake=True) as session:
            assert other.process(session, Incoming(make_message("p@x"), "p"), NOW).kind == "new"
            finished = waiting_on(
                store, session, lambda: pipeline.run(batch, lambda: NOW, batch_size=2)
            )
            late = make_message("re-a@x", in_reply_to="<a@x>")
            other.process(session, Incoming(late, "re-a"), NOW)  # waits, then goes on
        # Filed again after the other poller: its reply came first, so the batch's first
        # message joins that reply's ticket as a late parent does.
        assert finished(WAIT * 3) == {"reply": 2}
    assert refiled(caplog)
    placed = tickets_by_message(store)
    assert placed["b@x"] == placed["p@x"] and placed["a@x"] == placed["re-a@x"]


def test_a_reference_another_poller_is_indexing_is_waited_for_then_joined(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    postgresql_only(settings)
    caplog.set_level(logging.INFO, logger="mailsupport.batching")
    parent = make_message("parent@x.example.org", subject="Printer")
    reply = make_message(
        "reply@x.example.org", subject="Re: Printer", in_reply_to="<parent@x.example.org>"
    )
    with two_pollers(settings) as (other, pipeline):
        with other.store.write(intake=True) as session:  # another poller files the parent
            assert other.process(session, Incoming(parent, "other"), NOW).kind == "new"
            # The reply finds its parent nowhere yet (not committed), and waits to index it.
            filed = Incoming(reply, "reply")
            finished = waiting_on(store, session, lambda: pipeline.ingest(filed, NOW))
        outcome = finished()
        assert isinstance(outcome, Outcome) and outcome.kind == "reply"
    placed = tickets_by_message(store)
    assert placed["reply@x.example.org"] == placed["parent@x.example.org"]
    assert refiled(caplog)


def test_a_person_another_poller_is_adding_to_a_ticket_is_a_participant_of_it(
    settings: Settings, store: Store
) -> None:
    # Our answer copies Bob in (he takes part from then on) while Bob's own reply to the
    # customer's first message comes in through another poller: it waits for the answer's
    # ticket and joins it, as it would after it; not a stranger's new ticket.
    postgresql_only(settings)
    ours = settings.support_address
    first = make_message("first@x.example.org", sender="anna@x.example.org", to=ours)
    answer = make_message(
        "answer@example.com", sender=ours, to="anna@x.example.org", cc="bob@x.example.org",
        in_reply_to="<first@x.example.org>",
    )  # fmt: skip
    bob = make_message(
        "bob@x.example.org", sender="bob@x.example.org", to=ours,
        in_reply_to="<first@x.example.org>",
    )  # fmt: skip
    with two_pollers(settings) as (other, pipeline):
        assert pipeline.ingest(Incoming(first, "first"), NOW).kind == "new"
        with other.store.write(intake=True) as session:
            filed = other.process(session, Incoming(answer, "sent", sent=True), NOW)
            assert filed.kind == "reply"
            finished = waiting_on(
                store, session, lambda: pipeline.ingest(Incoming(bob, "bob"), NOW)
            )
        outcome = finished()
        assert isinstance(outcome, Outcome)
        assert (outcome.kind, outcome.ticket_number) == ("reply", filed.ticket_number)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_three_pollers_at_once_thread_an_archive_as_one_does(
    settings: Settings, store: Store, seed: int
) -> None:
    # The archive's conversations are dealt out among three pollers message by message,
    # so most conversations are filed by several of them at the same time; on a list the
    # references decide alone, so the order they meet in does not change the answer.
    joined = settings.model_copy(update={"stranger_replies": "join"})
    messages, conversations = mailing_list_archive(threads=30, seed=seed)
    shares = [messages[i::3] for i in range(3)]
    pipelines = [Pipeline(joined, Store.open(settings.db_url)) for _ in shares]
    outcomes: list[Outcome] = []
    try:
        threads = []
        for pipeline, share in zip(pipelines, shares, strict=True):
            items = [Incoming(raw, f"share#{i}") for i, raw in enumerate(share)]
            threads.append(
                in_thread(
                    lambda p=pipeline, items=items: p.run(  # type: ignore[misc]
                        items, lambda: NOW, batch_size=4, on_each=outcomes.append
                    )
                )
            )
        for thread, result in threads:
            thread.join(120)
            assert not thread.is_alive()
            assert "error" not in result, result
    finally:
        for pipeline in pipelines:
            pipeline.close()
            pipeline.store.engine.dispose()
    assert len(outcomes) == len(messages)
    assert not [o for o in outcomes if o.kind in ("quarantined", "duplicate")]
    assert_one_ticket_per_conversation(store, messages, conversations)
