"""`mailsupport report`: every figure checked on ticket histories with known answers.

The pure part (mailsupport.report) is tested on plain `TicketFacts`; the database part on a
week of generated tickets stored through the models (SQLite, and PostgreSQL when
MAILSUPPORT_TEST_DATABASE_URL is set), read back by `report.database.load_tickets` and through the
`report` command.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailsupport.errors import UsageError
from mailsupport.report import (
    Period,
    TicketFacts,
    build_report,
    clean_text,
    closed_spans,
    duration,
    find_topics,
    parse_period,
    parse_when,
    percentile,
    render_html,
    render_text,
)
from mailsupport.store.db import Store
from mailsupport.store.models import Message, RawMessage, Ticket, TicketEvent
from tests.support.cli import Run
from tests.support.paths import ROOT
from tests.support.processes import python_process

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SINCE, UNTIL = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
REPORT_FIELDS = {
    "report_version", "generated_at", "range", "tickets", "volume", "by_queue", "by_type",
    "by_priority", "by_line", "first_response", "resolution", "sla", "backlog", "top_senders",
    "top_domains", "topics", "automatic",
}  # fmt: skip


def at(day: int, hour: int = 0, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


H = timedelta(hours=1)


# ------------------------------------------------------------------------------------------
# Pure figures
# ------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 50) == 7 and percentile([7], 90) == 7
    assert percentile(range(1, 11), 50) == 5  # ceil(5.0) = 5th value
    assert percentile(range(1, 11), 90) == 9
    assert percentile([4, 1, 3, 2], 50) == 2  # the lower middle value, not 2.5
    assert percentile([10, 20, 30], 90) == 30  # ceil(2.7) = 3rd value
    assert percentile(range(1, 21), 90) == 18  # no float rounding surprise at exact ranks
    assert percentile(range(1, 31), 90) == 27


def test_duration_text() -> None:
    assert [duration(s) for s in (None, 5, 60, 3599, 3600, 3660, 86399, 86400, 190800)] == [
        "-", "5s", "1m", "59m", "1h 00m", "1h 01m", "23h 59m", "1d 00h", "2d 05h",
    ]  # fmt: skip


def test_parse_when_dates_durations_and_moments() -> None:
    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert parse_when("2026-03-01", now, "--since", end=False) == at(1)
    assert parse_when("2026-03-01", now, "--until", end=True) == at(2)  # the day is included
    assert parse_when("30d", now, "--since", end=False) == at(9, month=2)  # 30 days with today
    assert parse_when("1d", now, "--since", end=False) == at(10)  # today
    assert parse_when("0d", now, "--until", end=True) == at(11)
    assert parse_when("2w", now, "--since", end=False) == at(25, month=2)
    assert parse_when("12h", now, "--since", end=False) == now - 12 * H
    assert parse_when("2026-03-01T12:30", now, "--since", end=False) == at(1, 12, 30)
    assert parse_when("2026-03-01T12:30+03:00", now, "--since", end=False) == at(1, 9, 30)
    for bad in ("yesterday", "30x", "2026-13-01", "-3d", ""):
        with pytest.raises(UsageError, match="--since"):
            parse_when(bad, now, "--since", end=False)


def test_parse_period_defaults_clamps_and_refuses() -> None:
    now = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
    assert parse_period(None, None, now) == Period(at(9, month=2), now)
    assert parse_period("14d", "7d", now) == Period(at(25, month=2), at(4))  # one week
    assert parse_period("2026-03-01", "2026-12-31", now).until == now  # no future
    assert len(parse_period("2026-03-01", "2026-03-07", now).days()) == 7
    with pytest.raises(UsageError, match="--since must come before --until"):
        parse_period("2026-03-05", "2026-03-01", now)
    with pytest.raises(UsageError):
        parse_period("2026-04-01", None, now)  # in the future


def test_clean_text_drops_quotes_signatures_and_links() -> None:
    text = (
        "Hello,\nthe invoice https://example.com/x is missing.\nWrite to bill@example.com\n"
        "> old quoted line\nstill mine\nBest regards,\nAnna\n-- \nAnna Smith, ACME"
    )
    cleaned = clean_text(text)
    assert "invoice" in cleaned and "still mine" in cleaned
    assert "quoted" not in cleaned and "Anna" not in cleaned and "ACME" not in cleaned
    assert "example" not in cleaned
    reply = "Счёт так и не пришёл.\n\n12.03.2026 09:20, Иван пишет:\n> пароль\n> не подходит"
    assert clean_text(reply).strip() == "Счёт так и не пришёл."
    assert "iPhone" not in clean_text("Не работает оплата\n\nОтправлено с iPhone")
    assert clean_text("Thanks for the quick fix, but the export fails") != ""


def facts(number: int, subject: str, text: str = "", **fields: Any) -> TicketFacts:
    return TicketFacts(
        number=number, created_at=at(2, 9) + number * H, subject=subject, text=text, **fields
    )


def test_topics_fold_russian_inflections_into_one_topic() -> None:
    tickets = [
        facts(1, "не приходит счёт"),
        facts(2, "счета не приходят"),
        facts(3, "счёт не пришёл"),
        facts(4, "Не могу войти", "Не могу войти в личный кабинет"),
        facts(5, "Вход", "не получается войти в личном кабинете"),
        facts(6, "Доставка", "Где мой заказ?"),
    ]
    topics = find_topics(tickets)
    assert [(t.label, t.count, sorted(t.tickets)) for t in topics] == [
        ("не приходит счёт", 3, [1, 2, 3]),
        ("личный кабинет", 2, [4, 5]),
    ]
    assert topics[0].terms == ("счёт", "приходит")  # what was merged into the topic


def test_topics_prefer_phrases_keep_distinct_topics_apart_and_are_deterministic() -> None:
    tickets = [
        facts(1, "Password reset does not work", "The password reset link gives an error"),
        facts(2, "Cannot reset my password"),
        facts(3, "Reset password", "reset password link expired"),
        facts(4, "reset password please"),
        facts(5, "Export to CSV fails", "csv export crashes"),
        facts(6, "CSV export"),
        facts(7, "export is slow"),
        facts(8, "Hello", "Thanks!"),
    ]
    topics = find_topics(tickets)
    assert [(t.label, t.count, sorted(t.tickets)) for t in topics] == [
        ("reset password", 4, [1, 2, 3, 4]),  # the most common form of the phrase
        ("csv export", 3, [5, 6, 7]),  # the phrase covers 2 of 3: enough to name it
        ("link", 2, [1, 3]),  # shares only half of its tickets with the passwords
    ]
    assert topics[1].terms == ("export", "csv")
    assert find_topics(list(reversed(tickets))) == topics  # order of input does not matter
    assert find_topics(tickets, top=1) == topics[:1]
    assert find_topics(tickets, min_tickets=4) == [topics[0]]


def test_topics_ignore_words_in_most_tickets_of_a_big_report() -> None:
    tickets = [facts(n, f"Acme account {word}") for n, word in enumerate("ab" * 10 + "c", 1)]
    tickets += [facts(30 + n, "Wrong invoice amount") for n in range(3)]
    # "acme" and "account" are in more than half of the 24 tickets: they say nothing.
    assert [t.label for t in find_topics(tickets)] == ["invoice amount"]
    assert [t.label for t in find_topics(tickets[:19])] == ["acme account"]  # too few to tell


def test_closed_spans_follow_history_and_status() -> None:
    t = facts(1, "x", status="open", status_changes=((at(3), True), (at(4), False)))
    assert closed_spans(t) == [(at(3), True), (at(4), False)]
    # Closed now, with no history recorded: closed at closed_at.
    t = facts(1, "x", status="closed", closed_at=at(5))
    assert closed_spans(t) == [(at(5), True)]
    # Repeated or inconsistent events collapse; a closing without its reopening is dropped.
    t = facts(1, "x", status="new", status_changes=((at(3), True), (at(3, 1), True)))
    assert closed_spans(t) == []


def sla_facts() -> list[TicketFacts]:
    """Six tickets with targets, two without; answers in the comments."""
    created = at(2, 9)

    def t(n: int, priority: str, first: float | None, done: float | None, **kw: Any) -> TicketFacts:
        return TicketFacts(
            number=n,
            created_at=created,
            priority=priority,
            status="closed" if done is not None else "open",
            closed_at=created + done * H if done is not None else None,
            first_response_at=created + first * H if first is not None else None,
            first_response_due=kw.get("fdue", created + 2 * H),
            resolution_due=kw.get("rdue", created + 24 * H),
        )

    return [
        t(1, "urgent", 0.5, None),  # resolution late, waiting
        t(2, "high", 1, 6),  # in time
        t(3, "normal", 2, 24),  # exactly at the due times: in time
        t(4, "normal", 4, None),  # answered late; resolution late, waiting
        t(5, "normal", None, None),  # both late and waiting
        t(6, "low", 24, 48),  # both late
        t(7, "normal", None, None, fdue=None, rdue=None),  # no targets
        t(8, "normal", None, None, fdue=NOW + H, rdue=NOW + H),  # not due yet
    ]


def by_priority(part: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {
        p["priority"]: (p["with_target"], p["breached"], p["still_waiting"])
        for p in part["by_priority"]
    }


def test_sla_breaches_overall_and_by_priority() -> None:
    report = build_report(sla_facts(), Period(SINCE, UNTIL), NOW)
    first, resolution = report["sla"]["first_response"], report["sla"]["resolution"]
    assert (first["with_target"], first["breached"], first["still_waiting"]) == (7, 3, 1)
    assert (resolution["with_target"], resolution["breached"], resolution["still_waiting"]) == (
        7,
        4,
        3,
    )
    assert by_priority(first) == {
        "urgent": (1, 0, 0),
        "high": (1, 0, 0),
        "normal": (4, 2, 1),
        "low": (1, 1, 0),
    }
    assert by_priority(resolution) == {
        "urgent": (1, 1, 1),
        "high": (1, 0, 0),
        "normal": (4, 2, 2),
        "low": (1, 1, 0),
    }
    # First response: 0.5h, 1h, 2h, 4h, 24h; resolution: 6h, 24h, 48h.
    assert report["first_response"] == {
        "measured": 5,
        "median_seconds": 7200,
        "p90_seconds": 86400,
    }
    assert report["resolution"] == {
        "measured": 3,
        "median_seconds": 86400,
        "p90_seconds": 172800,
    }


def test_backlog_counts_older_tickets_and_reopenings() -> None:
    tickets = [
        TicketFacts(1, at(20, month=2), status="open"),  # open throughout
        TicketFacts(2, at(27, 10, month=2), status="closed", closed_at=at(2, 12)),
        TicketFacts(  # closed on the 3rd, reopened on the 4th
            3,
            at(3, 9),
            status="open",
            status_changes=((at(3, 10), True), (at(4, 9), False)),
        ),
        TicketFacts(4, at(4, 23, 59), status="closed", closed_at=at(5)),  # closed at midnight
    ]
    period = Period(at(2), at(5, 12))
    assert build_report(tickets, period, NOW)["backlog"] == [
        {"date": "2026-03-02", "open": 1},
        {"date": "2026-03-03", "open": 1},
        {"date": "2026-03-04", "open": 3},
        {"date": "2026-03-05", "open": 2},  # at `until`, midday
    ]


# ------------------------------------------------------------------------------------------
# A week of tickets in the database
# ------------------------------------------------------------------------------------------


def add_ticket(
    store: Store,
    number: int,
    created: datetime,
    subject: str,
    requester: str,
    text: str,
    *,
    queue: str = "",
    priority: str = "normal",
    status: str = "new",
    closed: datetime | None = None,
    replied: datetime | None = None,
    imported_reply: datetime | None = None,
    events: tuple[tuple[datetime, str, str], ...] = (),
    merged_into: int | None = None,
    **columns: Any,
) -> None:
    """One ticket with its first message, our acknowledgement and the given history."""
    with store.write() as session:
        ticket = Ticket(
            number=number,
            subject=subject,
            status=status,
            priority=priority,
            requester=requester,
            created_at=created,
            updated_at=created,
            closed_at=closed,
            queue=queue,
        )
        if merged_into is not None:
            target = session.exec(select(Ticket).where(Ticket.number == merged_into)).one()
            ticket.merged_into_id = target.id
        for name, value in columns.items():  # type, line, SLA due times
            setattr(ticket, name, value)
        session.add(ticket)
        session.flush()
        assert ticket.id is not None

        def message(direction: str, when: datetime, reason: str, body: str = "", **kw: Any) -> None:
            session.add(
                Message(
                    ticket_id=ticket.id,  # type: ignore[arg-type]
                    message_id=f"{number}.{direction}.{when.timestamp()}.{reason[:5]}@test",
                    direction=direction,
                    received_at=when,
                    created_at=when,
                    text=body,
                    thread_reason=reason,
                    **kw,
                )
            )

        message("in", created, "new ticket", text, from_address=requester)
        message("out", created + timedelta(minutes=1), "acknowledgement of a new ticket")
        if replied:
            message("out", replied, "reply by anna", "We are on it.", author="anna")
        if imported_reply:  # our mail from another client, imported from the Sent folder
            raw = RawMessage(sha256=f"{number:064d}", size=1, data=b"x", stored_at=imported_reply)
            session.add(raw)
            session.flush()
            message("out", imported_reply, "in-reply-to <x@test>", "Done.", raw_id=raw.id)
        if closed and status == "closed":
            message("out", closed, "closing notice, closed by anna")
        for when, action, detail in events:
            session.add(
                TicketEvent(
                    ticket_id=ticket.id, at=when, actor="anna", action=action, detail=detail
                )
            )
        # A later note, and a later customer message: neither is a response nor the first text.
        message("note", created + 30 * H, "internal note", "note: call them")
        message("in", created + 40 * H, "in-reply-to <y@test>", "Any news? счёт пароль")


CLOSE = "status"


@pytest.fixture
def week(store: Store) -> Store:
    """Tickets 1-3 before the range, 4-11 in it (2026-03-01 to 03-08), 12 after, 13 merged."""
    add_ticket(
        store, 1, at(25, 10, month=2), "Old question", "old@example.org", "old", status="open"
    )
    add_ticket(
        store, 2, at(26, 10, month=2), "Closed long ago", "old@example.org", "old",
        status="closed", closed=at(27, month=2),
        events=((at(27, month=2), CLOSE, "open -> closed"),),
    )  # fmt: skip
    add_ticket(
        store, 3, at(27, 10, month=2), "Closed in the range", "old@example.org", "old",
        status="closed", closed=at(4, 12), events=((at(4, 12), CLOSE, "open -> closed"),),
    )  # fmt: skip
    add_ticket(
        store, 4, at(2, 9), "Не приходит счёт", "Ivan@Romashka.ru",
        "Добрый день! Уже неделю не приходит счёт на почту.\n\n-- \nИван Петров\nООО Ромашка",
        queue="billing", priority="high", status="closed", replied=at(2, 10), closed=at(2, 15),
        events=((at(2, 15), CLOSE, "open -> closed"),),
        type="billing", first_response_due=at(2, 11), resolution_due=at(3, 9),
    )  # fmt: skip
    add_ticket(
        store, 5, at(2, 11), "Счета не приходят", "olga@romashka.ru",
        "Здравствуйте, счета не приходят с прошлого месяца.\n\n> пароль не подходит",
        queue="billing", status="closed", replied=at(2, 13), closed=at(3, 11),
        events=((at(3, 11), CLOSE, "open -> closed"),),
        type="billing", first_response_due=at(2, 13), resolution_due=at(3, 11),
    )  # fmt: skip
    add_ticket(
        store, 6, at(3, 8), "Счёт не пришёл", "petr@mail.example",
        "Счёт за март не пришёл. С уважением, Пётр",
        queue="billing", status="open", replied=at(3, 13),  # the stored time wins:
        first_response_at=at(3, 12),  # (an agent's first answer went out another way)
        type="billing", first_response_due=at(3, 10), resolution_due=at(4, 8),
    )  # fmt: skip
    add_ticket(
        store, 7, at(3, 9), "Password reset does not work", "john@acme.test",
        "Hi, the password reset link gives an error.\nThanks,\nJohn",
        queue="accounts", priority="urgent", status="open", replied=at(3, 9, 30),
        events=((at(3, 10), CLOSE, "open -> closed"), (at(4, 9), "reopened", "the customer wrote")),
        type="access", line=2, first_response_due=at(3, 11), resolution_due=at(4, 9),
    )  # fmt: skip
    add_ticket(
        store, 8, at(4, 10), "Cannot reset my password", "mary@acme.test",
        "I cannot reset my password, please help",
        queue="accounts", status="open",
        type="access", line=2, first_response_due=at(4, 12), resolution_due=at(5, 10),
    )  # fmt: skip
    add_ticket(
        store, 9, at(5, 14), "Reset password", "john@acme.test", "reset password link expired",
        queue="accounts", priority="low", status="closed", imported_reply=at(6, 14),
        closed=at(7, 14),  # no event: the status and closed_at alone say when
        type="access", first_response_due=at(5, 16), resolution_due=at(6, 14),
    )  # fmt: skip
    add_ticket(
        store, 10, at(6, 16), "Вопрос по доставке", "ivan@romashka.ru",
        "Где мой заказ? Доставка задерживается.", queue="vip & <friends>", status="pending",
        type="question",
    )  # fmt: skip
    add_ticket(
        store, 11, at(8, 23, 30), "Tom & Jerry <script>alert('x')</script>: reset password",
        "weird@acme.test", "Tom & Jerry <b>bold</b>",
    )  # fmt: skip
    add_ticket(store, 12, UNTIL, "After the range", "late@example.org", "reset password")
    add_ticket(
        store, 13, at(4, 11), "Duplicate", "ivan@romashka.ru", "не приходит счёт",
        status="closed", closed=at(4, 12), merged_into=4,
    )  # fmt: skip
    return store


def week_report(store: Store) -> dict[str, Any]:
    from mailsupport.report.database import read_tickets

    rows = read_tickets(store, SINCE, UNTIL)
    assert sorted(t.number for t in rows) == [1, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    return build_report(rows, Period(SINCE, UNTIL), NOW)


def expected_sla() -> dict[str, Any]:
    def part(total: tuple[int, int, int], rows: dict[str, tuple[int, int, int]]) -> dict[str, Any]:
        keys = ("with_target", "breached", "still_waiting")
        return {
            **dict(zip(keys, total, strict=True)),
            "by_priority": [
                {"priority": p, **dict(zip(keys, v, strict=True))} for p, v in rows.items()
            ],
        }

    # First response due 2h after creation: #6 (4h) and #9 (24h) late, #8 never answered.
    # Resolution due 1d after: #6, #7 (reopened), #8 still open, #9 closed after 2d.
    return {
        "first_response": part(
            (6, 3, 1),
            {"urgent": (1, 0, 0), "high": (1, 0, 0), "normal": (3, 2, 1), "low": (1, 1, 0)},
        ),
        "resolution": part(
            (6, 4, 3),
            {"urgent": (1, 1, 1), "high": (1, 0, 0), "normal": (3, 2, 2), "low": (1, 1, 0)},
        ),
    }


def test_every_figure_of_a_known_week(week: Store) -> None:
    report = week_report(week)
    assert set(report) == REPORT_FIELDS
    assert report["range"] == {
        "since": "2026-03-01T00:00:00+00:00",
        "until": "2026-03-09T00:00:00+00:00",
        "days": 8,
        "time_zone": "UTC",
    }
    assert report["tickets"] == 8
    assert report["volume"]["per_day"] == [
        {"date": f"2026-03-0{d}", "tickets": n}
        for d, n in zip(range(1, 9), (0, 2, 2, 1, 1, 1, 0, 1), strict=True)
    ]
    assert report["volume"]["per_week"] == [
        {"week": "2026-W09", "start": "2026-02-23", "days_in_range": 1, "tickets": 0},
        {"week": "2026-W10", "start": "2026-03-02", "days_in_range": 7, "tickets": 8},
    ]
    assert report["by_queue"] == [
        {"queue": "accounts", "tickets": 3},
        {"queue": "billing", "tickets": 3},
        {"queue": "", "tickets": 1},
        {"queue": "vip & <friends>", "tickets": 1},
    ]
    assert report["by_priority"] == [
        {"priority": "urgent", "tickets": 1},
        {"priority": "high", "tickets": 1},
        {"priority": "normal", "tickets": 5},
        {"priority": "low", "tickets": 1},
    ]
    assert report["by_type"] == [
        {"type": "access", "tickets": 3},
        {"type": "billing", "tickets": 3},
        {"type": "", "tickets": 1},
        {"type": "question", "tickets": 1},
    ]
    assert report["by_line"] == [{"line": 1, "tickets": 6}, {"line": 2, "tickets": 2}]
    # First responses: #7 30m, #4 1h, #5 2h, #6 4h, #9 24h (imported from Sent). The
    # acknowledgements, the closing notices and the notes are not responses.
    assert report["first_response"] == {"measured": 5, "median_seconds": 7200, "p90_seconds": 86400}
    # Resolutions: #4 6h, #5 24h, #9 48h; #7 was closed, then reopened.
    assert report["resolution"] == {"measured": 3, "median_seconds": 86400, "p90_seconds": 172800}
    assert report["sla"] == expected_sla()
    assert [p["open"] for p in report["backlog"]] == [2, 3, 3, 4, 5, 6, 5, 6]
    assert [p["date"] for p in report["backlog"]] == [f"2026-03-0{d}" for d in range(1, 9)]
    assert report["top_senders"] == [
        {"address": "ivan@romashka.ru", "tickets": 2},  # addresses compared lowercased
        {"address": "john@acme.test", "tickets": 2},
        {"address": "mary@acme.test", "tickets": 1},
        {"address": "olga@romashka.ru", "tickets": 1},
        {"address": "petr@mail.example", "tickets": 1},
        {"address": "weird@acme.test", "tickets": 1},
    ]
    assert report["top_domains"] == [
        {"domain": "acme.test", "tickets": 4},
        {"domain": "romashka.ru", "tickets": 3},
        {"domain": "mail.example", "tickets": 1},
    ]
    topics = [
        (t["label"], t["tickets"], [e["number"] for e in t["examples"]]) for t in report["topics"]
    ]
    assert topics == [
        ("reset password", 4, [11, 9, 8, 7]),
        ("не приходит счёт", 3, [6, 5, 4]),  # three inflections, one topic
        ("link", 2, [9, 7]),
    ]
    assert report["topics"][1]["examples"][0] == {"number": 6, "subject": "Счёт не пришёл"}


@pytest.mark.slow
def test_top_lists_are_cut(week: Store) -> None:
    from mailsupport.report.database import read_tickets

    rows = read_tickets(week, SINCE, UNTIL)
    report = build_report(rows, Period(SINCE, UNTIL), NOW, top=2)
    assert len(report["top_senders"]) == 2 and len(report["top_domains"]) == 2
    assert len(report["topics"]) == 2


def test_automatic_mail_is_no_work_and_counted_apart(week: Store) -> None:
    """Tickets opened by bounces and auto-replies change no figure of the known week, even
    with due times past (an older database) and a sender that recurs; they are counted in
    `automatic` by kind (issue 16)."""
    from mailsupport.report.database import read_tickets

    before = week_report(week)
    robots = [
        (20, at(3, 9), "bounce", "Undelivered Mail Returned to Sender", "mailer-daemon@mx.test"),
        (21, at(4, 9), "auto-reply", "Automatic reply: Password reset", "john@acme.test"),
        (22, at(5, 9), "auto-reply", "Out of office", "john@acme.test"),
        (23, at(25, month=2), "bulk", "Newsletter", "news@shop.test"),  # before the range
    ]
    for number, created, kind, subject, sender in robots:
        add_ticket(
            week, number, created, subject, sender, "reset password not delivered",
            status="open", automatic=kind,
            first_response_due=created + H, resolution_due=created + 2 * H,
        )  # fmt: skip
    rows = read_tickets(week, SINCE, UNTIL)
    after = build_report(rows, Period(SINCE, UNTIL), NOW)
    assert after.pop("automatic") == {
        "tickets": 3,
        "by_kind": [{"kind": "auto-reply", "tickets": 2}, {"kind": "bounce", "tickets": 1}],
    }
    assert before.pop("automatic") == {"tickets": 0, "by_kind": []}
    assert after == before
    text = render_text(build_report(rows, Period(SINCE, UNTIL), NOW))
    assert "Automatic mail, not counted as work: 3 (auto-reply 2, bounce 1)" in text


def test_an_empty_range(store: Store) -> None:
    report = week_report_empty(store)
    assert report["tickets"] == 0
    assert report["first_response"] == {"measured": 0, "median_seconds": None, "p90_seconds": None}
    assert report["topics"] == [] and report["top_senders"] == []
    assert "Most frequent problems" in render_text(report)
    assert "<svg" in render_html(report)


def week_report_empty(store: Store) -> dict[str, Any]:
    from mailsupport.report.database import read_tickets

    rows = read_tickets(store, SINCE, UNTIL)
    return build_report(rows, Period(SINCE, UNTIL), NOW)


# ------------------------------------------------------------------------------------------
# Output: terminal, HTML
# ------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_self_contained(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert page.startswith("<!DOCTYPE html>") and parsed.tags[0] == "html"
    assert "svg" in parsed.tags and "style" in parsed.tags
    assert not {"script", "link", "img", "iframe", "object"} & set(parsed.tags)
    assert parsed.links == []  # nothing to fetch
    assert "http" not in page and "url(" not in page and "@import" not in page
    return parsed


@pytest.mark.slow
def test_html_page_is_self_contained_and_escaped(week: Store) -> None:
    page = render_html(week_report(week))
    parsed = check_self_contained(page)
    assert parsed.tags.count("svg") >= 6  # volume, backlog, queue, type, priority, line
    assert "<script>" not in page
    assert "#11 Tom &amp; Jerry &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;: reset" in page
    assert "vip &amp; &lt;friends&gt;" in page
    text = "".join(parsed.text)
    assert "Tom & Jerry <script>alert('x')</script>: reset password" in text  # read back whole
    assert "не приходит счёт" in text and "2026-03-02: 2" in text  # a bar's tooltip


@pytest.mark.slow
def test_terminal_tables(week: Store) -> None:
    text = render_text(week_report(week))
    lines = text.splitlines()
    assert lines[0] == "Tickets created 2026-03-01 00:00 to 2026-03-09 00:00 UTC (8 days): 8"
    for heading in (
        "Volume per day (UTC)",
        "Volume per ISO week",
        "By queue",
        "By type",
        "By priority",
        "By line",
        "Response times",
        "SLA breaches",
        "Backlog: open tickets at the end of each day (UTC)",
        "Top senders",
        "Top domains",
        "Most frequent problems",
    ):
        assert heading in lines
    assert "  2026-03-02 Mon        2  ##############################" in lines
    assert "  2026-W09  2026-02-23     1        0" in lines
    assert "  first response         5  2h 00m    1d 00h" in lines
    assert "  resolution             3  1d 00h    2d 00h" in lines
    assert "  reset password          4  #11 #9 #8 #7" in lines
    assert "  не приходит счёт        3  #6 #5 #4" in lines
    assert "  (none)                 1    13%" in lines  # 1 of 8 without a queue, rounded up
    assert "  vip & <friends>        1    13%" in lines


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


@pytest.fixture
def run(run: Run, monkeypatch: pytest.MonkeyPatch) -> Run:
    """conftest's `run`, with the report's clock stopped at NOW."""
    from mailsupport.cli import reportcmd

    monkeypatch.setattr(reportcmd, "utcnow", lambda: NOW)
    return run


RANGE = ("--since", "2026-03-01", "--until", "2026-03-08")


@pytest.mark.slow
def test_cli_json(week: Store, run: Any) -> None:
    result = run("report", *RANGE, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(week_report(week)))
    assert set(data) == REPORT_FIELDS
    assert data["generated_at"] == "2026-03-10T12:00:00+00:00"
    assert set(data["volume"]) == {"per_day", "per_week"}
    assert set(data["first_response"]) == {"measured", "median_seconds", "p90_seconds"}
    assert set(data["sla"]) == {"first_response", "resolution"}
    assert set(data["sla"]["resolution"]) == {
        "with_target", "breached", "still_waiting", "by_priority",
    }  # fmt: skip
    assert set(data["topics"][0]) == {"label", "tickets", "terms", "examples"}
    assert set(data["topics"][0]["examples"][0]) == {"number", "subject"}


def test_the_topics_found_in_a_second_process_are_those_found_here(week: Store) -> None:
    from mailsupport.report.database import read_tickets

    with topics_aside_of(week) as pending:
        found = pending()
    assert found  # the worker answered: a fall-back here would hide a broken worker
    ours = [
        t for t in read_tickets(week, SINCE, UNTIL) if not t.automatic and t.created_at >= SINCE
    ]
    assert found == find_topics(ours, top=10)


def test_a_failing_topics_process_leaves_the_report_as_it_is(
    week: Store, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailsupport.report import topicsworker

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("the worker's own failure")

    worker = topicsworker._find

    def failing_worker(*args: Any) -> None:  # runs in the forked process: breaks it alone
        topicsworker.topics_of = broken  # type: ignore[assignment]
        worker(*args)

    monkeypatch.setattr(topicsworker, "_find", failing_worker)
    with topics_aside_of(week) as pending:
        assert pending() is None
    result = run("report", *RANGE, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(json.dumps(week_report(week)))


def test_a_report_on_a_database_not_made_yet(run: Any, tmp_path: Path) -> None:
    """The command creates it, as every command does; its topics process leaves that to it
    (two processes creating one schema at once would collide)."""
    fresh = tmp_path / "fresh" / "m.db"
    result = run("report", "--json", env={"MAILSUPPORT_DATABASE_URL": f"sqlite:///{fresh}"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tickets"] == 0
    assert fresh.exists()


def topics_aside_of(store: Store) -> Any:
    from mailsupport.report.topicsworker import topics_aside

    return topics_aside(
        store.engine.url.render_as_string(hide_password=False), Period(SINCE, UNTIL), 10
    )


@pytest.mark.slow
def test_cli_tables_default_range_and_top(week: Store, run: Any) -> None:
    result = run("report", *RANGE)
    assert result.exit_code == 0, result.output
    assert result.stdout == render_text(week_report(week))
    # Default: the last 30 days up to NOW (2026-02-09 to 2026-03-10), all of the week in.
    result = run("report", "--json", "--top", "1")
    data = json.loads(result.stdout)
    assert data["range"]["since"] == "2026-02-09T00:00:00+00:00"
    assert data["range"]["until"] == "2026-03-10T12:00:00+00:00"
    assert data["tickets"] == 12  # 1-12: all but the merged one
    assert len(data["topics"]) == 1 and len(data["top_senders"]) == 1


@pytest.mark.slow
def test_cli_html(week: Store, run: Any, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    result = run("report", *RANGE, "--html", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {target}: 8 tickets, 8 days\n"
    page = target.read_text(encoding="utf-8")
    assert page == render_html(week_report(week))
    check_self_contained(page)
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temporary left
    both = run("report", *RANGE, "--html", str(target), "--json")
    assert json.loads(both.stdout)["tickets"] == 8
    to_stdout = run("report", *RANGE, "--html", "-")
    assert to_stdout.stdout == page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "mailsupport: --since 'yesterday': give a date (2026-03-01)"),
        (("--until", "2026-02-30"), "mailsupport: --until '2026-02-30': give a date"),
        (("--since", "2026-03-05", "--until", "2026-03-01"), "mailsupport: nothing to report"),
        (("--html", "-", "--json"), "mailsupport: --html - and --json both want"),
    ],
)
def test_cli_bad_arguments_exit_2(run: Any, args: tuple[str, ...], message: str) -> None:
    result = run("report", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_cli_unwritable_html_file(week: Store, run: Any, tmp_path: Path) -> None:
    result = run("report", "--html", str(tmp_path / "missing" / "r.html"))
    assert result.exit_code == 1
    assert result.stderr.startswith("mailsupport: cannot write ")


def test_cli_help_documents_the_json_fields(run: Any) -> None:
    result = run("report", "--help")
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    for name in [*sorted(REPORT_FIELDS - {"volume"}), "per_day", "per_week", "median_seconds"]:
        assert name in flat, name


def test_report_module_needs_no_database_or_stemmer_at_import() -> None:
    code = (
        "import sys, mailsupport.report;"
        "print([m for m in ('sqlalchemy', 'sqlmodel', 'snowballstemmer') if m in sys.modules])"
    )
    out = python_process({}, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == b"[]"  # pure: the adapter and the stemmer load when used


# ------------------------------------------------------------------------------------------
# The example page the README links to: four weeks of a made-up desk
# ------------------------------------------------------------------------------------------

EXAMPLE_PAGE = ROOT / "docs" / "report-example.html"
EXAMPLE_PROBLEMS = [  # (weight, queue, type, [(subject, first message), ...])
    (6, "billing", "billing", [
        ("Не приходит счёт", "Добрый день! Не приходит счёт за март."),
        ("Счёт не пришёл", "Счёт за услуги так и не пришёл на почту."),
        ("Счета не приходят", "Уже второй месяц счета не приходят на почту бухгалтерии."),
        ("Где счёт?", "Нам не пришёл счёт, а оплатить нужно до пятницы."),
    ]),
    (3, "billing", "billing", [
        ("Invoice not received", "We have not received the invoice for March."),
        ("Missing invoice", "The invoice email never arrived, please resend the invoice."),
        ("Where is my invoice?", "I cannot find the March invoice anywhere."),
    ]),
    (2, "billing", "billing", [
        ("Двойное списание", "С карты списали оплату дважды, оформите возврат."),
        ("Charged twice", "My card was charged twice for the same order."),
    ]),
    (4, "accounts", "access", [
        ("Не могу войти в личный кабинет", "Пишет «неверный пароль», хотя пароль верный."),
        ("Не получается войти", "Не получается войти в личный кабинет с телефона."),
        ("Вход в личный кабинет", "Личный кабинет не открывается после смены пароля."),
    ]),
    (3, "accounts", "access", [
        ("Password reset link expired", "The reset password link says it has expired."),
        ("Cannot reset my password", "I cannot reset my password, the email never comes."),
        ("Reset password", "Reset password does nothing."),
    ]),
    (3, "tech", "bug", [
        ("Export to CSV fails", "Export to CSV fails with error 500."),
        ("CSV export crashes", "The CSV export crashes on big reports."),
        ("Ошибка выгрузки в CSV", "Выгрузка в CSV падает с ошибкой."),
    ]),
    (2, "tech", "question", [
        ("How do I add a user?", "How can I add a new user to our account?"),
        ("Как добавить пользователя?", "Подскажите, как добавить нового пользователя."),
    ]),
    (3, "", "", [
        ("Вопрос", "Добрый день, есть вопрос по тарифам."),
        ("Question about pricing", "Hello, is there a discount for a yearly plan?"),
        ("Предложение о сотрудничестве", "Предлагаем разместить рекламу на нашем сайте."),
        ("Hello", "Hi, who can I talk to about a partnership?"),
    ]),
]  # fmt: skip
EXAMPLE_TARGETS = {  # priority: (first response, resolution), hours
    "urgent": (1, 8), "high": (4, 24), "normal": (8, 72), "low": (24, 120),
}  # fmt: skip


def example_report() -> dict[str, Any]:
    """A deterministic report over 2026-03-02 to 03-29 with every section filled."""
    import random

    rng = random.Random(6)
    since, until, now = at(2), at(30), at(30, 9)
    domains = ["romashka.ru", "acme.test", "globex.example", "initech.example", "mail.example",
               "vector.example", "umbrella.example", "stark.example"]  # fmt: skip
    names = ("anna", "boris", "clara", "denis", "elena", "fedor", "galina", "igor",
             "john", "kate", "leo", "maria", "nina", "oleg", "pavel", "rita")  # fmt: skip
    people = [f"{name}@{rng.choice(domains)}" for name in names]
    weights = [1 / (i + 1) for i in range(len(people))]  # a few customers write a lot
    tickets: list[TicketFacts] = []
    number = 100
    for day in range(28):
        start = since + timedelta(days=day)
        count = rng.randint(1, 4) if start.weekday() >= 5 else rng.randint(4, 11)
        for _ in range(count):
            number += 1
            _, queue, kind, variants = rng.choices(
                EXAMPLE_PROBLEMS, weights=[p[0] for p in EXAMPLE_PROBLEMS]
            )[0]
            subject, text = rng.choice(variants)
            priority = rng.choices(["urgent", "high", "normal", "low"], weights=[1, 3, 10, 3])[0]
            created = start + timedelta(minutes=rng.randint(7 * 60, 20 * 60))
            first_target, done_target = EXAMPLE_TARGETS[priority]
            first = created + timedelta(hours=rng.uniform(0.05, 1.3) * first_target)
            done = created + timedelta(hours=rng.uniform(0.15, 1.25) * done_target)
            answered = first < now and rng.random() < 0.95
            closed = answered and done < now and rng.random() < 0.9
            changes: tuple[tuple[datetime, bool], ...] = ()
            if closed and rng.random() < 0.1:  # closed too early, the customer wrote again
                middle = created + (done - created) / 2
                changes = ((middle, True), (middle + timedelta(hours=2), False), (done, True))
            tickets.append(
                TicketFacts(
                    number=number,
                    created_at=created,
                    subject=subject,
                    status="closed" if closed else rng.choice(["open", "pending", "new"]),
                    priority=priority,
                    requester=rng.choices(people, weights=weights)[0],
                    queue=queue,
                    type=kind,
                    line=2 if kind == "bug" and rng.random() < 0.7 else 1,
                    closed_at=done if closed else None,
                    first_response_at=first if answered else None,
                    first_response_due=created + timedelta(hours=first_target),
                    resolution_due=created + timedelta(hours=done_target),
                    text=text,
                    status_changes=changes,
                )
            )
    # Older tickets still open when the four weeks begin: the backlog starts above zero.
    for n in range(9):
        created = since - timedelta(days=n + 2, hours=3)
        closed_at = since + timedelta(days=n * 2, hours=5) if n % 3 else None
        tickets.append(
            TicketFacts(
                number=90 + n,
                created_at=created,
                subject="Old",
                status="closed" if closed_at else "open",
                closed_at=closed_at,
            )
        )
    return build_report(tickets, Period(since, until), now)


def write_example_page() -> None:
    EXAMPLE_PAGE.write_text(render_html(example_report()), encoding="utf-8")


def test_example_page_in_docs_is_current() -> None:
    """docs/report-example.html is this report; regenerate: python -m tests.unit.test_report"""
    page = render_html(example_report())
    check_self_contained(page)
    assert EXAMPLE_PAGE.read_text(encoding="utf-8") == page, "python -m tests.unit.test_report"


if __name__ == "__main__":
    write_example_page()
