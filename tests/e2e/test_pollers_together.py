"""Several pollers filing mail into one database at once (issue 20): on PostgreSQL intake
transactions run side by side, each claiming what it touches (store/claims.py); any other
writer still runs alone; and what they decide is what one poller decides."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.store import claims
from mailsupport.store.db import Store
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


def waits_for(store: Store, holder: int) -> bool:
    """Whether a connection waits for an advisory lock that the backend `holder` holds."""
    query = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))"
    )
    with store.engine.connect() as conn:
        return bool(conn.execute(sa.text(query), {"holder": holder}).scalar())


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


def test_claims_on_one_conversation_take_turns_and_others_do_not_wait(
    settings: Settings, store: Store
) -> None:
    postgresql_only(settings)
    conversation = claims.conversation(["a1@x.example.org", "root@x.example.org"], "ann@x.org")

    def claim(keys: list[str]) -> Callable[[], str]:
        def work() -> str:
            with store.write(intake=True) as session:
                claims.claim(session, keys)
                return "claimed"

        return work

    with store.write(intake=True) as session:
        claims.claim(session, conversation)
        other, other_result = in_thread(claim(claims.conversation(["b1@x.example.org"], "")))
        other.join(WAIT)
        assert other_result == {"value": "claimed"}
        # A reply in the same conversation (it refers to the root), from someone else.
        same, same_result = in_thread(
            claim(claims.conversation(["a2@x.example.org", "root@x.example.org"], "bob@x.org"))
        )
        same.join(0.5)
        assert same.is_alive() and not same_result
        # The same sender's participation elsewhere waits too: threading reads it.
        sender, sender_result = in_thread(claim(claims.addresses(["ANN@x.org"])))
        sender.join(0.5)
        assert sender.is_alive() and not sender_result
    same.join(WAIT)
    sender.join(WAIT)
    assert same_result == {"value": "claimed"} and sender_result == {"value": "claimed"}


def test_a_batch_that_deadlocks_with_another_poller_is_filed_again(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    postgresql_only(settings)
    caplog.set_level(logging.INFO, logger="mailsupport.batching")
    first = make_message("first@x.example.org", subject="One")
    second = make_message("second@x.example.org", subject="Two", in_reply_to="<held@x.org>")
    # Another poller holds the conversation the batch's second message refers to.
    other = Store.open(settings.db_url)
    pipeline = Pipeline(settings, Store.open(settings.db_url))
    try:
        with other.write(intake=True) as session:
            claims.claim(session, claims.conversation(["held@x.org"], ""))
            holder = int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
            batch = [Incoming(first, "first"), Incoming(second, "second")]
            thread, result = in_thread(lambda: pipeline.run(batch, lambda: NOW, batch_size=2))
            wait_until(lambda: waits_for(store, holder))  # the batch waits on it
            # ... and now the other poller wants what the batch holds: a deadlock, which
            # PostgreSQL ends by failing the batch's transaction (it waited first).
            claims.claim(session, claims.conversation(["first@x.example.org"], ""))
        thread.join(WAIT * 3)
        assert not thread.is_alive()
        assert "error" not in result, result
        assert result["value"] == {"new": 2}
    finally:
        pipeline.close()
        pipeline.store.engine.dispose()
        other.engine.dispose()
    again = [r for r in caplog.records if "another writer was in the way" in r.getMessage()]
    assert again, "the batch was not filed again"
    placed = tickets_by_message(store)
    assert set(placed) == {"first@x.example.org", "second@x.example.org"}
    assert len(set(placed.values())) == 2


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
