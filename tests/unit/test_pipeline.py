"""Intake end to end on a real database: raw bytes in, tickets (or the quarantine) out."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select

from mailsupport import joining
from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import (
    Attachment,
    Message,
    MessageRef,
    Participant,
    QuarantineEntry,
    RawMessage,
    Ticket,
)
from tests.support.mailfactory import (
    BASE_TIME,
    Conversation,
    mailing_list_archive,
    make_message,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def pipeline(settings: Settings, store: Store) -> Iterator[Pipeline]:
    # Closed here: a failing test's traceback keeps it alive, and its parse workers would
    # hold up the end of the run.
    with Pipeline(settings, store) as made:
        yield made


def feed(pipeline: Pipeline, *raws: bytes, sent: bool = False) -> list[Outcome]:
    """Process the messages; `sent`: as files imported with `import --sent`."""
    outcomes: list[Outcome] = []
    pipeline.run(
        (Incoming(raw, f"test#{i}", sent=sent) for i, raw in enumerate(raws)),
        lambda: NOW,
        batch_size=7,
        on_each=outcomes.append,
    )
    return outcomes


def tickets_by_message(store: Store) -> dict[str, int]:
    with store.read() as session:
        return dict(session.exec(select(Message.message_id, Message.ticket_id)).all())


def assert_one_ticket_per_conversation(
    store: Store, messages: list[bytes], conversations: list[Conversation]
) -> dict[str, int]:
    """Every message stored once, each conversation in one live ticket of its own."""
    placed = tickets_by_message(store)
    assert len(placed) == len(messages)
    live = {t.id for t in live_tickets(store)}
    assert len(live) == len(conversations)
    for conversation in conversations:
        tickets = {placed[mid] for mid in conversation.message_ids}
        assert len(tickets) == 1, conversation.root
        assert tickets <= live
    return placed


def live_tickets(store: Store) -> list[Ticket]:
    with store.read() as session:
        return list(session.exec(select(Ticket).where(Ticket.merged_into_id == None)).all())  # noqa: E711


@pytest.mark.slow
def test_a_new_message_opens_a_ticket_and_a_reply_joins_it(
    pipeline: Pipeline, store: Store
) -> None:
    first, reply = feed(
        pipeline,
        make_message("q1@customer.example.org", subject="Cannot log in"),
        make_message(
            "q2@customer.example.org", subject="Re: Cannot log in",
            in_reply_to="<q1@customer.example.org>", date=BASE_TIME + timedelta(hours=1),
        ),
    )  # fmt: skip
    assert first.kind == "new"
    assert reply.kind == "reply"
    assert reply.ticket_number == first.ticket_number
    assert reply.detail == "in-reply-to <q1@customer.example.org>"
    [ticket] = live_tickets(store)
    assert ticket.subject == "Cannot log in"
    assert ticket.requester == "anna@customer.example.org"
    assert ticket.requester_name == "Anna Petrova"
    assert ticket.created_at == BASE_TIME
    assert ticket.updated_at == BASE_TIME + timedelta(hours=1)


def test_a_reply_to_our_own_outgoing_message_joins(pipeline: Pipeline, store: Store) -> None:
    """django-helpdesk #756: replies opened new tickets because only inbound IDs were known.
    Our reply here comes from an import of our sent mail (`import --sent`)."""
    feed(pipeline, make_message("q1@customer.example.org"))
    feed(
        pipeline,
        make_message(
            "ours-1@example.com", sender="Example Support <support@example.com>",
            to="anna@customer.example.org", subject="Re: Cannot log in [#1]",
            in_reply_to="<q1@customer.example.org>",
        ),
        sent=True,
    )  # fmt: skip
    [answer] = feed(
        pipeline,
        make_message(
            "q3@customer.example.org", subject="Re: Cannot log in [#1]",
            in_reply_to="<ours-1@example.com>",
        ),
    )  # fmt: skip
    assert answer.kind == "reply"
    with store.read() as session:
        directions = dict(session.exec(select(Message.message_id, Message.direction)).all())
    assert directions["ours-1@example.com"] == "out"
    assert directions["q3@customer.example.org"] == "in"
    assert len(live_tickets(store)) == 1


def test_reply_all_from_a_cc_participant_stays_in_the_ticket(
    pipeline: Pipeline, store: Store
) -> None:
    """FreeScout #2086: a CC'd colleague answering all must not split the thread."""
    feed(
        pipeline,
        make_message("q1@customer.example.org", cc="Boss <boss@customer.example.org>"),
        make_message(
            "b1@customer.example.org", sender="boss@customer.example.org",
            subject="RE: Cannot log in", references="<q1@customer.example.org>",
        ),
    )  # fmt: skip
    assert len(set(tickets_by_message(store).values())) == 1
    with store.read() as session:
        people = {p.address: p.role for p in session.exec(select(Participant)).all()}
    assert people == {"anna@customer.example.org": "requester", "boss@customer.example.org": "cc"}


def test_the_parent_arriving_after_its_reply_joins_the_replys_ticket(
    pipeline: Pipeline, store: Store
) -> None:
    # The colleague answers all: Anna takes part in the ticket the reply opens, so her
    # message may join it when it comes (a stranger's may not: see test_security.py).
    outcomes = feed(
        pipeline,
        make_message(
            "child@x.example.org", sender="colleague@x.example.org",
            to="Anna Petrova <anna@customer.example.org>", cc="support@example.com",
            subject="Re: Printer offline", references="<parent@x.example.org>",
            date=BASE_TIME + timedelta(hours=2),
        ),
        make_message("parent@x.example.org", subject="Printer offline", date=BASE_TIME),
    )  # fmt: skip
    assert [o.kind for o in outcomes] == ["new", "reply"]
    [ticket] = live_tickets(store)
    # The earliest message names the ticket and its requester.
    assert ticket.subject == "Printer offline"
    assert ticket.requester == "anna@customer.example.org"
    assert ticket.created_at == BASE_TIME


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shuffled_mailing_list_archive_gives_one_ticket_per_conversation(
    settings: Settings, store: Store, seed: int
) -> None:
    # On a list anyone may answer anyone: the desk lets every reference join.
    pipeline = Pipeline(settings.model_copy(update={"stranger_replies": "join"}), store)
    messages, conversations = mailing_list_archive(threads=25, seed=seed)
    feed(pipeline, *messages)
    placed = assert_one_ticket_per_conversation(store, messages, conversations)
    # The same run again changes nothing.
    again = feed(pipeline, *messages)
    assert Counter(o.kind for o in again) == {"duplicate": len(messages)}
    assert tickets_by_message(store) == placed


def test_two_tickets_joined_by_a_late_message_are_merged(pipeline: Pipeline, store: Store) -> None:
    feed(
        pipeline,
        make_message("a@x.example.org", subject="VPN drops", date=BASE_TIME),
        make_message(
            "c@x.example.org", subject="Re: VPN drops", in_reply_to="<b@x.example.org>",
            date=BASE_TIME + timedelta(hours=2),
        ),
    )  # fmt: skip
    assert len(live_tickets(store)) == 2
    [outcome] = feed(
        pipeline,
        make_message(
            "b@x.example.org", subject="Re: VPN drops", in_reply_to="<a@x.example.org>",
            date=BASE_TIME + timedelta(hours=1),
        ),
    )  # fmt: skip
    [ticket] = live_tickets(store)
    assert outcome.ticket_number == ticket.number == 1
    assert set(tickets_by_message(store).values()) == {ticket.id}
    with store.read() as session:
        merged = session.exec(select(Ticket).where(Ticket.number == 2)).one()
    assert merged.merged_into_id == ticket.id
    assert merged.status == "closed"
    # A later reply tagged with the merged ticket's number still lands in the survivor.
    [late] = feed(
        pipeline,
        make_message("d@x.example.org", subject="Re: VPN drops [#2]", date=BASE_TIME),
    )
    assert late.ticket_number == 1


def test_subject_tag_joins_only_for_participants(pipeline: Pipeline, store: Store) -> None:
    feed(pipeline, make_message("q1@customer.example.org", subject="Cannot log in"))
    friend, stranger = feed(
        pipeline,
        make_message("q2@customer.example.org", subject="Re: Cannot log in [#1]"),
        make_message(
            "s1@evil.example.net", sender="mallory@evil.example.net",
            subject="Re: Cannot log in [#1]",
        ),
    )  # fmt: skip
    assert (friend.kind, friend.ticket_number) == ("reply", 1)
    assert stranger.kind == "new"
    assert "not a participant" in stranger.detail


def test_an_equal_subject_alone_never_joins(pipeline: Pipeline, store: Store) -> None:
    outcomes = feed(
        pipeline,
        make_message("q1@customer.example.org", subject="Help"),
        make_message("q2@other.example.org", sender="bob@other.example.org", subject="Re: Help"),
    )
    assert [o.kind for o in outcomes] == ["new", "new"]


def test_damaged_reference_headers_still_thread(pipeline: Pipeline, store: Store) -> None:
    feed(pipeline, make_message("root@x.example.org"))
    outcomes = feed(
        pipeline,
        make_message(
            "r1@x.example.org", in_reply_to="<root@x.example.org> (Anna's message of Monday)"
        ),
        make_message("r2@x.example.org", references="root@x.example.org r1@x.example.org"),
        make_message(
            "r3@x.example.org",
            in_reply_to="<nowhere@x.example.org> <r2@x.example.org>",
            references="<r3@x.example.org> <r3@x.example.org> <r2@x.example.org>",
        ),
        make_message("r4@x.example.org", references="<r4@x.example.org>", subject="Loop"),
    )  # fmt: skip
    assert [o.kind for o in outcomes] == ["reply", "reply", "reply", "new"]
    assert len({o.ticket_number for o in outcomes[:3]}) == 1


@pytest.mark.slow
def test_a_message_id_seen_before_is_stored_once(pipeline: Pipeline, store: Store) -> None:
    original = make_message("dup@x.example.org", body="first copy")
    resent = make_message("dup@x.example.org", body="second copy, other bytes")
    outcomes = feed(pipeline, original, resent, original)
    assert [o.kind for o in outcomes] == ["new", "duplicate", "duplicate"]
    assert len(live_tickets(store)) == 1


def test_a_stored_message_missing_from_the_index_is_still_a_duplicate(
    pipeline: Pipeline, store: Store
) -> None:
    # Intake looks for an earlier copy only among the Message-IDs the index knows (every
    # stored message indexes its own). Should a row of the index be missing all the same
    # (a hand edit, a bug), the unique Message-ID still makes the copy a duplicate.
    original = make_message("unindexed@x.example.org", body="first copy")
    assert [o.kind for o in feed(pipeline, original)] == ["new"]
    with store.write() as session:
        session.execute(
            sa.delete(MessageRef).where(MessageRef.message_id == "unindexed@x.example.org")
        )
    resent = make_message("unindexed@x.example.org", body="second copy, other bytes")
    assert [o.kind for o in feed(pipeline, resent)] == ["duplicate"]
    assert len(live_tickets(store)) == 1
    with store.read() as session:
        assert len(session.exec(select(QuarantineEntry)).all()) == 0


def test_a_message_without_message_id_gets_a_stable_one(pipeline: Pipeline, store: Store) -> None:
    raw = make_message(None)
    first, again = feed(pipeline, raw, raw)
    assert first.message_id is not None
    assert first.message_id.startswith(hashlib.sha256(raw).hexdigest()[:40])
    assert again.kind == "duplicate"


def test_raw_bytes_are_kept_unchanged(pipeline: Pipeline, store: Store) -> None:
    raw = make_message("q1@customer.example.org", body="Привет", charset="koi8-r")
    feed(pipeline, raw)
    with store.read() as session:
        message = session.exec(select(Message)).one()
        stored = session.get(RawMessage, message.raw_id)
    assert stored is not None and stored.data == raw
    assert message.text == "Привет"


def test_attachments_are_stored_once_by_sha256(store: Store, settings: Settings) -> None:
    # As files (in the database: tests/unit/test_attachment_store.py).
    settings = settings.model_copy(update={"attachments": "files"})
    data = b"%PDF-1.4 fake invoice " * 100
    feed(
        Pipeline(settings, store),
        make_message("a1@x.example.org", attachments=[("счёт.pdf", "application/pdf", data)]),
        make_message("a2@x.example.org", attachments=[("../../etc/pw", "application/pdf", data)]),
    )
    digest = hashlib.sha256(data).hexdigest()
    with store.read() as session:
        parts = session.exec(select(Attachment).order_by(Attachment.id)).all()
    assert [p.sha256 for p in parts] == [digest, digest]
    assert parts[0].filename == "счёт.pdf"
    assert "/" not in parts[1].filename and ".." not in parts[1].filename
    assert parts[0].size == len(data)
    stored = list((settings.data_dir / "attachments").rglob("*"))
    assert [p.name for p in stored if p.is_file()] == [digest]
    assert (settings.data_dir / "attachments" / digest[:2] / digest).read_bytes() == data


def test_too_large_messages_are_quarantined_whole(store: Store, settings: Settings) -> None:
    small = Pipeline(settings.model_copy(update={"max_message_bytes": 500}), store)
    raw = make_message("big@x.example.org", body="x" * 2000)
    [outcome] = feed(small, raw)
    assert outcome.kind == "quarantined"
    assert "MAILSUPPORT_MAX_MESSAGE_BYTES" in outcome.detail
    with store.read() as session:
        entry = session.exec(select(QuarantineEntry)).one()
        assert session.get(RawMessage, entry.raw_id).data == raw  # type: ignore[union-attr]
    # Processed again with a higher limit, it is stored and leaves the quarantine.
    [retried] = feed(Pipeline(settings, store), raw)
    assert retried.kind == "new"
    with store.read() as session:
        assert session.exec(select(QuarantineEntry)).all() == []


def test_the_quarantine_as_a_library_lists_shows_and_retries(
    store: Store, settings: Settings
) -> None:
    from mailsupport import quarantine
    from mailsupport.errors import NotFoundError

    raws = [make_message(f"big{i}@x.example.org", body="x" * 2000) for i in (1, 2)]
    feed(Pipeline(settings.model_copy(update={"max_message_bytes": 500}), store), *raws)
    listed = quarantine.entries(store)
    assert [size for _, size in listed] == [len(raw) for raw in raws]
    first, second = (entry.id for entry, _ in listed)
    assert first is not None and second is not None
    entry, stored = quarantine.entry(store, first)
    assert stored.data == raws[0] and entry.retry_count == 0
    with pytest.raises(NotFoundError, match="no quarantine entry 999"):
        quarantine.entry(store, 999)
    with pytest.raises(NotFoundError, match="no quarantine entry 999"):
        list(quarantine.retry(store, settings, lambda: NOW, 999))

    # Still too large: counted as tried, and kept.
    small = settings.model_copy(update={"max_message_bytes": 500})
    [(entry_id, outcome)] = quarantine.retry(store, small, lambda: NOW, second)
    assert (entry_id, outcome.kind) == (second, "quarantined")
    assert quarantine.entry(store, second)[0].retry_count == 1
    assert quarantine.entry(store, second)[0].last_retry_at == NOW
    # Every entry, in order, each after its own commit.
    retried = list(quarantine.retry(store, settings, lambda: NOW))
    assert [(i, o.kind) for i, o in retried] == [(first, "new"), (second, "new")]
    assert quarantine.entries(store) == []
    assert list(quarantine.retry(store, settings, lambda: NOW)) == []


def test_unparseable_input_is_quarantined_and_does_not_block_the_rest(
    pipeline: Pipeline, store: Store
) -> None:
    outcomes = feed(
        pipeline,
        b"\x00\x01\x02 binary garbage \xff\xfe",
        make_message("after@x.example.org"),
    )
    assert [o.kind for o in outcomes] == ["quarantined", "new"]


def test_an_internal_error_quarantines_only_that_message(
    pipeline: Pipeline, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = joining.people_of

    def explode(message, *args, **kwargs):  # type: ignore[no-untyped-def]
        if message.message_id == "bad@x.example.org":
            raise ValueError("simulated bug")
        return original(message, *args, **kwargs)

    monkeypatch.setattr(joining, "people_of", explode)
    outcomes = feed(
        pipeline,
        make_message("good1@x.example.org"),
        make_message("bad@x.example.org", sender="b@y.example.org"),
        make_message("good2@x.example.org", sender="c@y.example.org"),
    )
    assert [o.kind for o in outcomes] == ["new", "quarantined", "new"]
    assert "simulated bug" in outcomes[1].detail
    # Nothing of the failed message was half-written.
    assert set(tickets_by_message(store)) == {"good1@x.example.org", "good2@x.example.org"}
    assert len(live_tickets(store)) == 2


def test_a_customer_reply_reopens_a_closed_ticket(pipeline: Pipeline, store: Store) -> None:
    feed(pipeline, make_message("q1@customer.example.org"))
    with store.write() as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.status, ticket.closed_at = "closed", NOW
        session.add(ticket)
    feed(pipeline, make_message("q2@customer.example.org", in_reply_to="<q1@customer.example.org>"))
    [ticket] = live_tickets(store)
    assert ticket.status == "open"
    assert ticket.closed_at is None


def test_a_reply_failing_after_its_ticket_was_written_leaves_no_stale_ticket_behind(
    pipeline: Pipeline, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Filing writes a ticket's changes by a statement and tells the ORM they are stored. When
    # the message then fails, its savepoint takes the statement back: the ORM must read the
    # ticket again, or the next reply would see it reopened and leave it closed.
    feed(pipeline, make_message("q1@customer.example.org"))
    with store.write() as session:
        ticket = session.exec(select(Ticket)).one()
        ticket.status, ticket.closed_at = "closed", NOW
        session.add(ticket)
    file = pipeline._file

    def failing_after_filing(session: Any, message: Any, *args: Any, **kwargs: Any) -> Outcome:
        outcome = file(session, message, *args, **kwargs)
        if message.message_id == "q2@customer.example.org":
            raise RuntimeError("failed after its ticket was written")
        return outcome

    monkeypatch.setattr(pipeline, "_file", failing_after_filing)
    outcomes = feed(
        pipeline,
        make_message("q2@customer.example.org", in_reply_to="<q1@customer.example.org>"),
        make_message("q3@customer.example.org", in_reply_to="<q1@customer.example.org>"),
    )
    assert [o.kind for o in outcomes] == ["quarantined", "reply"]
    [ticket] = live_tickets(store)
    assert ticket.status == "open"
    assert ticket.closed_at is None


def test_every_message_in_a_random_mix_ends_stored_or_quarantined(
    pipeline: Pipeline, store: Store
) -> None:
    rng = random.Random(7)
    messages, _ = mailing_list_archive(threads=5, seed=11)
    junk = [b"", b"\xff" * 50, b"Subject: no body and no blank line"]
    mix = messages + junk
    rng.shuffle(mix)
    outcomes = feed(pipeline, *mix)
    assert len(outcomes) == len(mix)
    counts = Counter(o.kind for o in outcomes)
    with store.read() as session:
        stored = len(session.exec(select(Message)).all())
        quarantined = len(session.exec(select(QuarantineEntry)).all())
    assert stored == counts["new"] + counts["reply"]
    assert quarantined == counts["quarantined"]
    assert stored + quarantined == len(mix) - counts["duplicate"]


# -- two processes storing at the same time (real on PostgreSQL; SQLite serialises anyway) ----


def race(
    settings: Settings, first: bytes, second: bytes
) -> tuple[Outcome, Outcome | BaseException]:
    """A stores `first` and holds its transaction open while B, on its own connection,
    stores `second`; then A commits."""
    import threading
    import time

    a = Pipeline(settings, Store.open(settings.db_url))
    b = Pipeline(settings, Store.open(settings.db_url))
    result: dict[str, Outcome | BaseException] = {}

    def run_b() -> None:
        try:
            result["b"] = b.ingest(Incoming(second, "b"), NOW)
        except BaseException as error:
            result["b"] = error

    with a.store.write() as session:
        first_outcome = a.process(session, Incoming(first, "a"), NOW)
        thread = threading.Thread(target=run_b)
        thread.start()
        time.sleep(0.5)  # B reaches the database while A's transaction is open
    thread.join(60)
    a.store.engine.dispose()
    b.store.engine.dispose()
    return first_outcome, result["b"]


def visible_messages(store: Store) -> set[str]:
    """Message-IDs an agent can reach through live (unmerged) tickets."""
    with store.read() as session:
        live = [t.id for t in session.exec(select(Ticket).where(Ticket.merged_into_id == None))]  # noqa: E711
        rows = session.exec(select(Message.message_id, Message.ticket_id)).all()
    return {mid for mid, ticket in rows if ticket in live}


@pytest.mark.slow
def test_concurrent_same_bytes_is_a_duplicate(settings: Settings, store: Store) -> None:
    raw = make_message("same@x.example.org")
    first, second = race(settings, raw, raw)
    assert first.kind == "new"
    assert isinstance(second, Outcome) and second.kind == "duplicate"


@pytest.mark.slow
def test_concurrent_replies_to_an_unknown_parent_end_in_one_ticket(
    pipeline: Pipeline, settings: Settings, store: Store
) -> None:
    r1 = make_message(
        "r1@x.example.org", cc="bob@x.example.org", in_reply_to="<parent@x.example.org>"
    )  # both answer all: each takes part in the other's ticket
    r2 = make_message(
        "r2@x.example.org", sender="bob@x.example.org", in_reply_to="<parent@x.example.org>"
    )
    race(settings, r1, r2)
    feed(pipeline, make_message("parent@x.example.org", date=BASE_TIME - timedelta(days=1)))
    assert len(live_tickets(store)) == 1
    assert visible_messages(store) == {
        "r1@x.example.org", "r2@x.example.org", "parent@x.example.org"
    }  # fmt: skip


@pytest.mark.slow
def test_a_merge_racing_a_reply_loses_nothing_from_view(
    pipeline: Pipeline, settings: Settings, store: Store
) -> None:
    feed(
        pipeline,
        make_message("x@x.example.org", subject="A"),
        # Anna's two tickets, Bob copied on the second: her message may merge them.
        make_message("y@x.example.org", subject="B", cc="bob@x.example.org"),
    )  # fmt: skip
    both = make_message(
        "both@x.example.org", references="<x@x.example.org> <y@x.example.org>",
        in_reply_to="<y@x.example.org>",
    )  # fmt: skip
    reply = make_message(
        "ry@x.example.org", sender="bob@x.example.org", in_reply_to="<y@x.example.org>"
    )
    race(settings, both, reply)
    assert len(live_tickets(store)) == 1
    assert visible_messages(store) == {
        "x@x.example.org", "y@x.example.org", "both@x.example.org", "ry@x.example.org"
    }  # fmt: skip


def test_an_order_number_in_a_tag_is_not_a_ticket(pipeline: Pipeline, store: Store) -> None:
    [outcome] = feed(pipeline, make_message("o@x.example.org", subject="Order [#20260302123]"))
    assert outcome.kind == "new"
