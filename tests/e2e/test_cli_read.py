"""The read side: `list` filters, sorting and paging, `show` with folded quotes, notes,
`--raw` and `--history`, colour, and the fast SQLite read path (EXPLAIN QUERY PLAN, imports)."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select
from typer.testing import CliRunner

import mailsupport.store as store_package
from mailsupport.cli import app
from mailsupport.cli.app import use_colour
from mailsupport.cli.render import ticket_text
from mailsupport.config import Settings
from mailsupport.quoting import Folded, fold
from mailsupport.store.db import Store
from mailsupport.store.models import (
    Message,
    MessageRef,
    OutboxItem,
    Ticket,
    TicketEvent,
    TicketTag,
)
from tests.support.desk import take
from tests.support.mailfactory import make_message
from tests.support.paths import ROOT
from tests.support.processes import mailsupport_process, python_process

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LIST_FIELDS = {
    # as before 0005, exactly
    "id", "number", "subject", "status", "priority", "requester", "requester_name",
    "created_at", "updated_at", "closed_at", "merged_into", "messages",
    # agent work (0005) and support practice (0007)
    "assignee", "queue", "tags", "follows", "type", "line", "first_response_at",
    "first_response_due", "resolution_due",
    # opened by automatic mail (0009), the mailbox written to (0011), who wrote last (0012)
    "automatic", "mailbox", "last_writer",
}  # fmt: skip


def change(store: Store, number: int, **fields: Any) -> None:
    """Set ticket fields directly (the action commands have their own tests)."""
    with store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        for key, value in fields.items():
            if key == "tags":
                for tag in value:
                    session.add(TicketTag(ticket_id=ticket.id, tag=tag))  # type: ignore[arg-type]
            else:
                setattr(ticket, key, value)
        session.add(ticket)


@pytest.fixture
def desk(settings: Settings, store: Store) -> dict[str, int]:
    """Five tickets, one hour apart (#1 oldest), worked on in different ways."""
    numbers = {}
    for i, name in enumerate(["login", "invoice", "crash", "refund", "export"]):
        raw = make_message(
            f"{name}@customer.example.org",
            subject=f"Problem with {name}",
            sender=f"{name.title()} <{name}@customer.example.org>",
            date=T0 + timedelta(hours=i),
        )
        numbers[name] = take(settings, store, raw, T0 + timedelta(hours=i))
    change(store, numbers["login"], assignee="anna", priority="high", tags=["vip", "login"])
    change(store, numbers["invoice"], assignee="boris", queue="billing", status="open")
    change(store, numbers["crash"], assignee="anna", priority="urgent", status="open")
    change(store, numbers["refund"], queue="billing", status="closed", tags=["vip"])
    change(store, numbers["export"], priority="low", status="pending")
    return numbers


def numbers_of(run, *args: str, env: dict[str, str] | None = None) -> list[int]:  # type: ignore[no-untyped-def]
    result = run("list", "--json", *args, env=env)
    assert result.exit_code == 0, result.output
    return [t["number"] for t in json.loads(result.output)]


# -- list ------------------------------------------------------------------------------------


def test_list_json_keeps_its_fields_and_adds_the_agent_work(run, desk) -> None:  # type: ignore[no-untyped-def]
    rows = json.loads(run("list", "--json").output)
    assert [set(r) for r in rows] == [LIST_FIELDS] * 5
    login = next(r for r in rows if r["number"] == desk["login"])
    assert login["assignee"] == "anna" and login["priority"] == "high"
    assert login["tags"] == ["login", "vip"]  # sorted
    assert login["queue"] == "" and login["follows"] is None and login["messages"] == 1
    assert login["mailbox"] == "default"  # no mailboxes file: one mailbox
    export = next(r for r in rows if r["number"] == desk["export"])
    assert export["assignee"] is None and export["tags"] == []


@pytest.mark.slow
def test_each_filter(run, desk) -> None:  # type: ignore[no-untyped-def]
    d = desk
    assert numbers_of(run, "--status", "open") == [d["crash"], d["invoice"]]
    assert numbers_of(run, "--status", "OPEN") == [d["crash"], d["invoice"]]
    assert numbers_of(run, "--assignee", "anna") == [d["crash"], d["login"]]
    assert numbers_of(run, "--assignee", "none") == [d["export"], d["refund"]]
    assert numbers_of(run, "--priority", "urgent") == [d["crash"]]
    assert numbers_of(run, "--queue", "billing") == [d["refund"], d["invoice"]]
    assert numbers_of(run, "--tag", "vip") == [d["refund"], d["login"]]
    assert numbers_of(run, "--tag", "VIP", "--tag", "login") == [d["login"]]
    assert numbers_of(run, "--tag", "nothing") == []
    assert numbers_of(run, "--status", "open", "--assignee", "anna") == [d["crash"]]
    assert numbers_of(run, "--queue", "billing", "--status", "closed") == [d["refund"]]


@pytest.mark.slow
def test_mine_is_the_agent_from_as_settings_or_login(run, desk, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    anna = [desk["crash"], desk["login"]]
    assert numbers_of(run, "--mine", "--as", "anna") == anna
    assert numbers_of(run, "--mine", env={"MAILSUPPORT_AGENT": "boris"}) == [desk["invoice"]]
    assert numbers_of(run, "--mine", "--as", "anna", env={"MAILSUPPORT_AGENT": "boris"}) == anna
    monkeypatch.setattr("getpass.getuser", lambda: "anna")
    assert numbers_of(run, "--mine") == anna


@pytest.mark.slow
def test_list_refuses_what_it_cannot_do(run, desk) -> None:  # type: ignore[no-untyped-def]
    for args, message in [
        (["--priority", "asap"], "unknown priority 'asap'"),
        (["--sort", "subject"], "unknown sort key 'subject'"),
        (["--mine", "--assignee", "anna"], "--mine and --assignee cannot be combined"),
        (["--as", "anna"], "--as NAME goes with --mine"),
        (["--since", "last week"], "--since 'last week': use a date"),
    ]:
        result = run("list", *args)
        assert result.exit_code == 2, args
        assert message in result.output


@pytest.mark.slow
def test_since_takes_a_duration_or_a_date(run, desk, store) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    change(store, desk["crash"], updated_at=now - timedelta(hours=2))
    change(store, desk["invoice"], updated_at=now - timedelta(days=3))
    assert numbers_of(run, "--since", "3h") == [desk["crash"]]
    assert numbers_of(run, "--since", "4d") == [desk["crash"], desk["invoice"]]
    assert numbers_of(run, "--since", "1w") == [desk["crash"], desk["invoice"]]
    assert numbers_of(run, "--since", "150m") == [desk["crash"]]
    assert numbers_of(run, "--since", "90m") == []
    assert len(numbers_of(run, "--since", "2026-03-01")) == 5
    assert numbers_of(run, "--since", (now - timedelta(days=1)).astimezone().date().isoformat())
    assert numbers_of(run, "--since", "2099-01-01T00:00") == []


@pytest.mark.slow
def test_sorting_and_paging(run, desk) -> None:  # type: ignore[no-untyped-def]
    d = desk
    by_age = [d["export"], d["refund"], d["crash"], d["invoice"], d["login"]]
    assert numbers_of(run) == by_age  # most recently updated first
    assert numbers_of(run, "--sort", "updated", "--reverse") == by_age[::-1]
    assert numbers_of(run, "--sort", "created") == by_age
    assert numbers_of(run, "--sort", "number") == sorted(by_age, reverse=True)
    assert numbers_of(run, "--sort", "number", "--reverse") == sorted(by_age)
    # urgent, high, then normal ones by update, low last
    urgency = [d["crash"], d["login"], d["refund"], d["invoice"], d["export"]]
    assert numbers_of(run, "--sort", "priority") == urgency
    assert numbers_of(run, "--sort", "priority", "--reverse") == urgency[::-1]
    assert numbers_of(run, "--limit", "2") == by_age[:2]
    assert numbers_of(run, "--limit", "2", "--offset", "2") == by_age[2:4]
    assert numbers_of(run, "--offset", "4") == by_age[4:]
    assert numbers_of(run, "--offset", "5") == []
    assert run("list", "--limit", "0").exit_code == 2
    page = run("list", "--limit", "2", "--offset", "2").output.splitlines()
    assert page[-1] == "(more: --offset 4)"
    assert run("list", "--offset", "3").output.splitlines()[-1] != "(more: --offset 5)"


@pytest.mark.slow
def test_list_table(run, desk) -> None:  # type: ignore[no-untyped-def]
    lines = run("list").output.splitlines()
    assert lines[0].split() == [
        "#", "STATUS", "UPDATED", "PRIORITY", "ASSIGNEE", "MSGS", "LAST", "REQUESTER", "SUBJECT",
    ]  # fmt: skip
    crash = next(line for line in lines if line.endswith("Problem with crash"))
    assert crash.split()[:2] == [str(desk["crash"]), "open"]
    assert crash.split()[4:7] == ["urgent", "anna", "1"]
    export = next(line for line in lines if line.endswith("Problem with export"))
    assert export.split()[4:6] == ["low", "-"]  # unassigned
    assert "\x1b" not in run("list").output  # not a terminal: no colour
    assert run("list", "--status", "pending", "--tag", "vip").output == "no tickets\n"


def test_merged_tickets_are_not_listed(run, desk, store) -> None:  # type: ignore[no-untyped-def]
    with store.write() as session:
        target = session.exec(select(Ticket).where(Ticket.number == desk["login"])).one()
    change(store, desk["export"], merged_into_id=target.id, status="closed")
    assert desk["export"] not in numbers_of(run)
    shown = run("show", str(desk["export"])).output
    assert shown.startswith(f"(ticket #{desk['export']} was merged into #{desk['login']})")


# -- show ------------------------------------------------------------------------------------

PARENT = "Hello,\n\nthe invoice for March never arrived.\nCan you send it again?\n\nAnna"


@pytest.fixture
def conversation(settings: Settings, store: Store) -> int:
    """A customer's message; our answer (only in the outbox, as we send); her reply quoting
    both in the usual way; a Russian reply quoting with "пишет:"; an internal note."""
    number = take(
        settings,
        store,
        make_message("p1@customer.example.org", subject="Invoice", body=PARENT, date=T0),
        T0,
    )
    ours = "Hello Anna,\n\nwe sent it again.\n\nSupport"
    with store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        assert ticket.id is not None
        session.add(
            Message(
                ticket_id=ticket.id, message_id="r1@example.com", direction="out",
                from_address="support@example.com", from_name="Example Support",
                subject=f"Re: Invoice [#{number}]", date=T0 + timedelta(hours=1),
                received_at=T0 + timedelta(hours=1), text=ours, author="boris",
                thread_reason="reply by boris", created_at=T0,
            )
        )  # fmt: skip
        session.add(
            OutboxItem(
                ticket_id=ticket.id, message_id="r1@example.com", kind="reply",
                mail_from="support@example.com", recipients=["anna@customer.example.org"],
                data=b"Message-ID: <r1@example.com>\r\n\r\nwe sent it again\r\n",
                status="sent", attempts=1, next_attempt_at=T0, created_at=T0, queued_at=T0,
                sent_at=T0 + timedelta(hours=1),
            )
        )  # fmt: skip
        session.add(MessageRef(message_id="r1@example.com", ticket_id=ticket.id))
    history = [
        "On Mon, 2 Mar 2026 at 10:00, Example Support wrote:",
        *("> " + line if line else ">" for line in ours.splitlines()),
        ">",
        *(">> " + line if line else ">>" for line in PARENT.splitlines()),
    ]
    reply = "Still nothing here.\n\n" + "\n".join(history)
    take(
        settings,
        store,
        make_message(
            "p2@customer.example.org",
            subject="Re: Invoice",
            body=reply,
            in_reply_to="<r1@example.com>",
            date=T0 + timedelta(hours=2),
        ),
        T0 + timedelta(hours=2),
    )
    russian = "Спасибо, пришло!\n\n02.03.2026 11:00, Anna Petrova пишет:\nStill nothing here.\n"
    take(
        settings,
        store,
        make_message(
            "p3@customer.example.org",
            subject="Re: Invoice",
            body=russian,
            in_reply_to="<p2@customer.example.org>",
            date=T0 + timedelta(hours=3),
        ),
        T0 + timedelta(hours=3),
    )
    with store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        session.add(
            Message(
                ticket_id=ticket.id, message_id="note.1@mailsupport.invalid", direction="note",  # type: ignore[arg-type]
                from_name="boris", subject="(internal note)", date=T0 + timedelta(hours=4),
                received_at=T0 + timedelta(hours=4), text="She pays by card, check Stripe.",
                author="boris", thread_reason="internal note", created_at=T0,
            )
        )  # fmt: skip
        session.add(
            TicketEvent(
                ticket_id=ticket.id, at=T0 + timedelta(hours=4), actor="boris",  # type: ignore[arg-type]
                action="note", detail="She pays by card, check Stripe.",
            )
        )  # fmt: skip
    change(store, number, assignee="boris", queue="billing", tags=["invoice", "vip"])
    return number


def test_show_folds_quoted_history(run, conversation) -> None:  # type: ignore[no-untyped-def]
    text = run("show", str(conversation)).output
    assert "Still nothing here." in text
    assert "   [… 13 quoted lines hidden]" in text  # "On ... wrote:" and 12 quoted lines
    assert "> we sent it again." not in text and "wrote:" not in text
    assert "Спасибо, пришло!" in text
    assert "   [… 2 quoted lines hidden]" in text  # "... пишет:" and the copy below it
    assert "пишет:" not in text
    assert "the invoice for March never arrived." in text  # the first message, whole

    full = run("show", str(conversation), "--full").output
    assert "hidden]" not in full
    assert "On Mon, 2 Mar 2026 at 10:00, Example Support wrote:" in full
    assert "   > we sent it again." in full
    assert "   >> the invoice for March never arrived." in full
    assert "02.03.2026 11:00, Anna Petrova пишет:" in full


@pytest.mark.slow
def test_show_marks_notes_and_authors_and_the_ticket_header(run, conversation) -> None:  # type: ignore[no-untyped-def]
    text = run("show", str(conversation)).output
    lines = text.splitlines()
    assert lines[0] == f"#{conversation}  Invoice"
    assert lines[1].startswith("status new, priority normal, requester Anna Petrova <anna@")
    assert lines[1].endswith(", 5 messages")
    assert lines[2] == "assignee boris, line 1, queue billing, tags invoice vip"
    heads = [line for line in lines if line[:3] in ("<< ", ">> ", "-- ")]
    assert [h[:6] for h in heads] == ["<< [1]", ">> [2]", "<< [3]", "<< [4]", "-- [5]"]
    assert heads[1].endswith("  by boris")
    assert heads[4].startswith("-- [5] INTERNAL NOTE by boris  ")
    assert "   She pays by card, check Stripe." in lines
    assert "   [delivery sent]" in lines
    assert "history" not in lines  # compact by default


@pytest.mark.slow
def test_show_history(run, conversation) -> None:  # type: ignore[no-untyped-def]
    lines = run("show", str(conversation), "--history").output.splitlines()
    start = lines.index("history")
    events = lines[start + 1 :]
    assert events[0].startswith("   ") and events[0].endswith("system  created: new ticket")
    assert events[-1].endswith("boris   note: She pays by card, check Stripe.")  # actors aligned


def test_show_json_adds_agent_work_and_authors(run, conversation) -> None:  # type: ignore[no-untyped-def]
    shown = json.loads(run("show", str(conversation), "--json").output)
    assert LIST_FIELDS - {"messages"} <= set(shown)
    assert {"messages", "participants", "history"} <= set(shown)
    assert shown["assignee"] == "boris" and shown["queue"] == "billing"
    assert shown["tags"] == ["invoice", "vip"] and shown["follows"] is None
    messages = shown["messages"]
    assert [m["direction"] for m in messages] == ["in", "out", "in", "in", "note"]
    assert [m["author"] for m in messages] == ["", "boris", "", "", "boris"]
    assert messages[1]["delivery"]["status"] == "sent"
    assert "> we sent it again." in messages[2]["text"]  # JSON keeps the text whole
    assert set(messages[0]) == {
        "message_id", "direction", "from", "to", "cc", "subject", "date", "received_at",
        "in_reply_to", "references", "text", "thread_reason", "author", "ack", "delivery",
        "attachments",
    }  # fmt: skip


@pytest.mark.slow
def test_show_follows(run, conversation, desk, store) -> None:  # type: ignore[no-untyped-def]
    with store.write() as session:
        old = session.exec(select(Ticket).where(Ticket.number == desk["refund"])).one()
    change(store, conversation, follows_id=old.id)
    shown = json.loads(run("show", str(conversation), "--json").output)
    assert shown["follows"] == desk["refund"]
    assert f"follows #{desk['refund']}" in run("show", str(conversation)).output.splitlines()[2]
    listed = json.loads(run("list", "--json").output)
    assert next(t for t in listed if t["number"] == conversation)["follows"] == desk["refund"]


@pytest.mark.slow
def test_raw_prints_the_original_bytes(run, conversation, store) -> None:  # type: ignore[no-untyped-def]
    with store.read() as session:
        from mailsupport.store.models import RawMessage

        message = session.exec(
            select(Message).where(Message.message_id == "p2@customer.example.org")
        ).one()
        original = session.get(RawMessage, message.raw_id).data  # type: ignore[union-attr]
    for which in ("3", "p2@customer.example.org", "<p2@customer.example.org>"):
        result = run("show", str(conversation), "--raw", which)
        assert result.exit_code == 0
        assert result.stdout_bytes == original
    ours = run("show", str(conversation), "--raw", "2")  # composed by us: the outbox bytes
    assert ours.stdout_bytes == b"Message-ID: <r1@example.com>\r\n\r\nwe sent it again\r\n"


@pytest.mark.slow
def test_raw_of_a_message_without_bytes_or_not_there(run, conversation) -> None:  # type: ignore[no-untyped-def]
    note = run("show", str(conversation), "--raw", "5")
    assert note.exit_code == 1
    assert note.output == (
        f"mailsupport: message 5 of ticket #{conversation} has no bytes: an internal note\n"
    )
    for which in ("0", "6", "other@example.org"):
        missing = run("show", str(conversation), "--raw", which)
        assert missing.exit_code == 1
        assert missing.output.startswith(f"mailsupport: ticket #{conversation} has no message")


@pytest.mark.slow
def test_export_has_the_new_fields(run, conversation) -> None:  # type: ignore[no-untyped-def]
    [line] = run("export").output.splitlines()
    exported = json.loads(line)
    assert exported["tags"] == ["invoice", "vip"] and exported["assignee"] == "boris"
    assert [m["author"] for m in exported["messages"]] == ["", "boris", "", "", "boris"]


# -- colour ----------------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    assert use_colour(Tty()) is True
    assert use_colour(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Tty()) is False
    monkeypatch.setenv("NO_COLOR", "")  # set but empty does not count (no-color.org)
    assert use_colour(Tty()) is True
    monkeypatch.setenv("TERM", "dumb")
    assert use_colour(Tty()) is False


@pytest.mark.slow
def test_coloured_show_is_the_same_text(run, conversation) -> None:  # type: ignore[no-untyped-def]
    detail = json.loads(run("show", str(conversation), "--json").output)
    coloured = ticket_text(detail, conversation, colour=True)
    plain = ticket_text(detail, conversation, colour=False)
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == plain
    assert plain == run("show", str(conversation)).output.rstrip("\n")


# -- folding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks!\n\nOn Mon, Bob <\nbob@x.example> wrote:\n> old\n>> older\n", ["Thanks!", "", 4]),
        ("Yes.\n\n-----Original Message-----\nFrom: us\n\nold text", ["Yes.", "", 4]),
        ("Да.\n\n-----Исходное сообщение-----\nОт: мы", ["Да.", "", 2]),
        ("Да.\n\nпн, 2 мар. 2026 г. в 09:20, Иван <ivan@example.ru>:\n> а\n> б", ["Да.", "", 3]),
        ("Ок.\n\n02.03.2026 09:20, Иван пишет:\nстарый текст\n", ["Ок.", "", 2]),
        # inline answers keep the short quotes they answer
        ("> Which version?\n3.2\n> Which OS?\nLinux", None),
        # a longer quote inside is folded, what follows it stays
        ("Hi\n\nOn Mon, Bob wrote:\n> a\n>\n> b\n> c\n\nMy answer", ["Hi", "", 5, "", "My answer"]),
        # all quote: nothing new to show, so it is shown whole
        ("> only a quote\n> nothing else", None),
        ("", []),
        ("a\r\n\r\n\r\nb\n\n", ["a", "", "b"]),
        ("Colon: not an attribution\nplain text", None),
        # Outlook's block of the copied mail's headers (an HTML reply turned into text)
        (
            "Works now.\n\nFrom: Support <support@example.com>\nSent: Monday, March 2, 2026"
            " 9:20 AM\nTo: Anna <anna@example.org>\nSubject: RE: [#7] Login\n\nTry again.",
            ["Works now.", "", 6],
        ),
        (
            "Спасибо!\n\nОт: Поддержка <support@example.com>\nОтправлено: 2 марта 2026 г."
            "\nКому: Иван\nТема: RE: Счёт\n\nСтарый текст",
            ["Спасибо!", "", 6],
        ),
        # a "From:" line in the customer's own words, without the block: kept
        ("From: my old address it worked\nSubject lines are fine", None),
        # a forward that starts with the block: all of it is the point
        ("From: Boss <b@example.org>\nSent: today\nSubject: fyi\n\ntext", None),
    ],
)
def test_fold(text: str, expected: list[str | int] | None) -> None:
    got = [x.lines if isinstance(x, Folded) else x for x in fold(text)]
    if expected is None:
        expected = text.splitlines()
    assert got == expected


def test_fold_and_the_reply_quote_agree_on_what_is_new() -> None:
    from mailsupport.compose import quote_text

    text = "Thanks!\n\nOn Mon, Bob <\nbob@x.example> wrote:\n> old\n>> older\n"
    assert quote_text(text) == "> Thanks!"
    assert [x for x in fold(text) if isinstance(x, str) and x] == ["Thanks!"]
    outlook = "Thanks!\n\nFrom: Bob\nSent: Monday\nTo: Anna\nSubject: RE: x\n\nold"
    assert quote_text(outlook) == "> Thanks!"
    assert [x for x in fold(outlook) if isinstance(x, str) and x] == ["Thanks!"]


# -- the fast SQLite read path ---------------------------------------------------------------


def test_schema_revision_is_the_stores() -> None:
    from mailsupport.store.db import SCHEMA_REVISION
    from mailsupport.store.reader import schema_revision

    assert schema_revision() == SCHEMA_REVISION


@pytest.mark.slow
def test_every_filter_uses_an_index(settings: Settings, store: Store, desk) -> None:  # type: ignore[no-untyped-def]
    from mailsupport.store.queries import TicketFilter, ticket_query
    from mailsupport.store.reader import Reader, sqlite_file

    path = sqlite_file(settings.db_url)
    if path is None:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    connection = sqlite3.connect(path)
    reader = Reader(connection, sqlite=True, dbapi=True)
    cases = (
        [(TicketFilter(), sort) for sort in ("updated", "created", "number", "priority")]
        + [
            (TicketFilter(waiting=True, assignee="anna"), "priority"),  # `next`
            (TicketFilter(waiting=True, unassigned=True), "priority"),
        ]
        + [
            (TicketFilter(status="open"), "updated"),
            (TicketFilter(assignee="anna"), "updated"),
            (TicketFilter(unassigned=True), "updated"),
            (TicketFilter(priority="high"), "updated"),
            (TicketFilter(queue="billing"), "updated"),
            (TicketFilter(tags=("vip",)), "updated"),
            (TicketFilter(since=T0), "updated"),
            (TicketFilter(waiting=True), "updated"),
            (TicketFilter(waiting=True, assignee="anna"), "updated"),
            (TicketFilter(waiting=True, unassigned=True), "updated"),
        ]
    )
    for where, sort in cases:
        for reverse in (False, True):
            sql, params = ticket_query(reader, where, sort, reverse)
            plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, params)]
            assert not any(re.fullmatch(r"SCAN (TABLE tickets AS )?t", p) for p in plan), plan
            if not where.tags:  # the index gives the order: nothing sorted afterwards
                assert not any("TEMP B-TREE" in p for p in plan), (where, sort, plan)
            if where.waiting and (where.assignee or where.unassigned):  # `next`: a few to sort
                assert any("(last_writer=? AND assignee=" in p for p in plan), plan
    connection.close()


@pytest.mark.slow
def test_the_priority_order_comes_from_an_index_on_postgresql(
    settings: Settings,
    store: Store,
    desk,  # type: ignore[no-untyped-def]
) -> None:
    """The rank expression of `--sort priority` must be written as the index has it, or
    PostgreSQL sorts every ticket of the filter again (with sorting made as dear as the
    planner allows, it still sorts when no index gives the order)."""
    from mailsupport.store import EXPRESSION_INDEXES, pgread
    from mailsupport.store.queries import TicketFilter, ticket_query
    from mailsupport.store.reader import Reader

    if not settings.db_url.startswith("postgresql"):
        pytest.skip("SQLite's plans: test_every_filter_uses_an_index")
    with store.engine.connect() as conn:
        reader = Reader(conn, sqlite=False, dbapi=False)
        conn.exec_driver_sql("SET enable_sort = off")
        conn.exec_driver_sql("SET enable_seqscan = off")
        cases = [  # (which of the two it takes for this few tickets is the planner's call)
            TicketFilter(),
            TicketFilter(waiting=True, assignee="anna"),  # `next`
            TicketFilter(waiting=True, unassigned=True),
        ]
        for where in cases:
            for reverse in (False, True):
                sql, params = ticket_query(reader, where, "priority", reverse)
                sql = pgread.pyformat(sql + " LIMIT 50")
                plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql, params))
                assert "Sort" not in plan, plan
                assert any(name in plan for name in EXPRESSION_INDEXES), plan


def test_read_modules_do_not_import_sqlalchemy() -> None:
    code = (
        "import sys, mailsupport.cli.tickets, mailsupport.cli.render, mailsupport.store.queries\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'sqlmodel', 'rich') or m == 'mailsupport.store.models')\n"
        "assert not heavy, heavy"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT
    )
    assert done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not hasattr(store_package, "SCHEMA_REVISION"),
    reason="SCHEMA_REVISION still lives in store.db, which imports SQLAlchemy",
)
def test_list_show_and_search_load_neither_sqlalchemy_nor_the_models(
    env_for_cli: dict[str, str], conversation: int
) -> None:
    # On SQLite through sqlite3, on PostgreSQL through psycopg: the same fast path.
    code = (
        "import sys\nfrom mailsupport.cli import main\nsys.argv[1:] = ARGS\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "heavy = [m for m in ('sqlalchemy', 'sqlmodel', 'mailsupport.store.models') "
        "if m in sys.modules]\nassert not heavy, heavy"
    )
    shown = ["show", str(conversation)]
    for args in (["list"], shown, [*shown, "--raw", "1"], ["search", "invoice"]):
        done = python_process(env_for_cli, "-c", code.replace("ARGS", repr(args)))
        assert done.returncode == 0, done.stderr


def test_read_commands_register_only_their_own_module() -> None:
    from mailsupport.cli import COMMAND_MODULES, modules_for

    light = (["list"], ["show", "7", "--json"], ["-v", "--config", "a.env", "export"])
    for args in (*light, ["--config=a.env", "--verbose", "list", "--help"]):
        assert modules_for(args) == ("tickets",), args
    for args in ([], ["--help"], ["--config", "list"], ["assign", "7"], ["db", "status"], ["-x"]):
        assert modules_for(args) == COMMAND_MODULES, args
    assert {"list", "show", "assign"} <= {c.name for c in app.registered_commands}


@pytest.mark.slow
def test_a_read_process_collects_garbage_once_started(env_for_cli: dict[str, str]) -> None:
    code = (
        "import gc, sys\nfrom mailsupport.cli import main\nsys.argv[1:] = ['list']\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "assert gc.isenabled()\n"
        "others = {m for m in sys.modules if m.startswith('mailsupport.cli.')}\n"
        "others -= {'mailsupport.cli.app', 'mailsupport.cli.tickets', 'mailsupport.cli.render'}\n"
        "assert not others, others"
    )
    done = python_process(env_for_cli, "-c", code)
    assert done.returncode == 0, done.stderr


# -- real processes --------------------------------------------------------------------------


@pytest.mark.slow
def test_list_and_show_as_real_processes(env_for_cli: dict[str, str], conversation: int) -> None:
    listed = mailsupport_process(env_for_cli, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["#", "STATUS", "UPDATED"]
    assert lines[1].split()[0] == str(conversation) and lines[1].endswith("Invoice")
    assert b"\x1b" not in listed.stdout  # a pipe is not a terminal
    shown = mailsupport_process(env_for_cli, "show", str(conversation))
    assert shown.returncode == 0, shown.stderr
    assert "[… 13 quoted lines hidden]" in shown.stdout.decode()
    as_json = mailsupport_process(env_for_cli, "list", "--json", "--mine", "--as", "boris")
    assert [t["number"] for t in json.loads(as_json.stdout)] == [conversation]
    missing = mailsupport_process(env_for_cli, "show", "999")
    assert missing.returncode == 1
    assert missing.stderr.decode() == "mailsupport: no ticket #999 (see `mailsupport list`)\n"


@pytest.mark.slow
def test_a_brand_new_database_is_created_by_list(env_for_cli: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**env_for_cli, "MAILSUPPORT_DATABASE_URL": f"sqlite:///{tmp_path / 'new' / 'm.db'}"}
    done = mailsupport_process(env, "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"no tickets\n"
    assert (tmp_path / "new" / "m.db").exists()


def test_a_locked_database_is_a_temporary_failure(
    env_for_cli: dict[str, str], settings: Settings, store: Store, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from mailsupport.store import reader

    if reader.sqlite_file(settings.db_url) is None:
        pytest.skip("SQLite's locking")
    monkeypatch.setattr(reader, "SQLITE_BUSY_SECONDS", 0.1)
    path = reader.sqlite_file(settings.db_url)
    assert path is not None
    store.engine.dispose()  # the journal mode changes only with no other connection open
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # WAL readers never wait; this one must
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = CliRunner().invoke(app, ["list"], env=env_for_cli)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 75, result.output
    assert result.output.startswith("mailsupport: database is locked")


def test_the_table_fits_the_terminal(run, desk) -> None:  # type: ignore[no-untyped-def]
    from mailsupport.cli.render import ticket_table

    rows = json.loads(run("list", "--json").output)
    for rows_ in (rows, [{**rows[0], "subject": "x" * 300, "assignee": "a" * 40}]):
        narrow = ticket_table(rows_, 80, colour=False)
        assert "REQUESTER" not in narrow[0]
        assert all(len(line) <= 80 for line in narrow)
        wide = ticket_table(rows_, 160, colour=False)
        assert "REQUESTER" in wide[0] and all(len(line) <= 160 for line in wide)
    piped = ticket_table([{**rows[0], "subject": "x" * 300}], None, colour=False)
    assert piped[1].endswith("x" * 300)  # not a terminal: nothing clipped


def test_the_psycopg_reader_takes_the_same_sql() -> None:
    from mailsupport.store.pgread import pyformat

    sql = "SELECT ''::tsquery, '12:30', x FROM t WHERE a = :a AND b LIKE 'reply by %' "
    sql += "AND c IN (:p0, :p1)"
    assert pyformat(sql) == (
        "SELECT ''::tsquery, '12:30', x FROM t WHERE a = %(a)s AND b LIKE 'reply by %%' "
        "AND c IN (%(p0)s, %(p1)s)"
    )


def test_a_postgresql_schema_behind_is_refused_as_before(
    run, settings: Settings, store: Store
) -> None:  # type: ignore[no-untyped-def]
    if not settings.db_url.startswith("postgresql"):
        pytest.skip("the psycopg fast path")
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0013'"))
    done = run("list")
    assert done.exit_code != 0
    assert "revision 0013" in done.output and "db upgrade" in done.output
