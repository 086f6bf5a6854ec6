"""Agents known to the desk (`agent add | set | list | remove`) and what they are told: who
hears of a new ticket, an answer, an assignment, an escalation and an SLA falling due; at
once or in a digest; never the customer, never about automatic mail or imported history."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from mailsupport.config import Settings
from mailsupport.notify import run_due
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem, Ticket
from tests.support.cli import Run
from tests.support.desk import parsed, take
from tests.support.mailfactory import make_message


def agent_mail(store: Store) -> list[tuple[str, list[str], str]]:
    """(kind, recipients, subject) of the mail queued for agents, oldest first."""
    with store.read() as session:
        items = session.exec(
            select(OutboxItem)
            .where(col(OutboxItem.kind).in_(("notification", "digest")))
            .order_by(col(OutboxItem.id))
        ).all()
        return [(i.kind, list(i.recipients), str(parsed(i.data)["Subject"])) for i in items]


def told(store: Store) -> list[str]:
    return [rcpt for _, rcpts, _ in agent_mail(store) for rcpt in rcpts]


def customer(n: int, **kwargs: object) -> bytes:
    defaults: dict[str, object] = {"subject": f"Question {n}", "date": datetime.now(UTC)}
    return make_message(f"c{n}@customer.example.org", **(defaults | kwargs))  # type: ignore[arg-type]


def test_the_registry_by_command(run: Run) -> None:
    assert run("agent", "list").stdout.startswith("no agents registered")
    added = run("agent", "add", "anna", "Anna <Anna@Agents.Example>", "--queue", "billing")
    assert added.exit_code == 0, added.output
    assert "anna <anna@agents.example>: billing; every line; notify instant" in added.stdout
    assert run("agent", "add", "boris", "boris@agents.example", "--line", "2").exit_code == 0
    assert run("agent", "add", "Anna", "other@agents.example").exit_code == 1  # the name
    assert run("agent", "add", "carl", "anna@agents.example").exit_code == 1  # the address
    assert run("agent", "add", "carl", "not-an-address").exit_code == 2
    assert run("agent", "add", "carl", "c@agents.example", "--notify", "hourly").exit_code == 2
    assert run("agent", "set", "anna", "--notify", "digest:1h").exit_code == 0
    listed = json.loads(run("agent", "list", "--json").stdout)
    assert [(a["name"], a["queues"], a["line"], a["notify"], a["notify_own"]) for a in listed] == [
        ("anna", ["billing"], None, "digest:1h", True),
        ("boris", [], 2, "instant", False),
    ]
    assert run("agent", "remove", "boris").exit_code == 0
    assert run("agent", "remove", "boris").exit_code == 1


def test_once_agents_are_registered_as_must_name_one(
    run: Run, settings: Settings, store: Store
) -> None:
    take(settings, store, customer(1))
    assert run("note", "1", "-m", "before the registry", "--as", "whoever").exit_code == 0
    run("agent", "add", "anna", "anna@agents.example")
    refused = run("note", "1", "-m", "who am I", "--as", "whoever")
    assert refused.exit_code == 2
    assert "no agent 'whoever' is registered (agents: anna" in refused.stderr
    assert run("note", "1", "-m", "me", env={"MAILSUPPORT_AGENT": "ANNA"}).exit_code == 0
    assert run("assign", "1", "nobody-known", "--as", "anna").exit_code == 2


def test_who_hears_of_what(run: Run, settings: Settings, store: Store) -> None:
    run("agent", "add", "anna", "anna@agents.example", "--queue", "billing")
    run("agent", "add", "boris", "boris@agents.example", "--line", "2")
    run("agent", "add", "carl", "carl@agents.example", "--notify", "off")
    run("agent", "add", "dora", "dora@agents.example", "--line", "1")
    take(settings, store, customer(1))  # queue "", line 1
    assert told(store) == ["dora@agents.example"]

    assert run("assign", "1", "anna", "--as", "dora").exit_code == 0
    assert told(store)[1:] == ["anna@agents.example"]
    assert "Assigned to you" in agent_mail(store)[-1][2]
    take(settings, store, customer(2, in_reply_to="c1@customer.example.org"))
    assert told(store)[2:] == ["anna@agents.example"]  # the assignee alone
    assert "The customer answered" in agent_mail(store)[-1][2]

    assert run("escalate", "1", "--as", "anna").exit_code == 0
    assert told(store)[3:] == ["boris@agents.example"]  # the agents of line 2
    with store.read() as session:
        ours = session.exec(select(OutboxItem).where(OutboxItem.kind == "notification")).all()
        customers = {r for item in ours for r in item.recipients if "customer" in r}
    assert customers == set()


def test_no_news_of_automatic_mail_or_imported_history(
    run: Run, settings: Settings, store: Store
) -> None:
    run("agent", "add", "dora", "dora@agents.example")
    take(settings, store, customer(1))
    assert len(told(store)) == 1
    away = customer(
        2, in_reply_to="c1@customer.example.org", subject="Out of office",
        extra_headers={"Auto-Submitted": "auto-replied"},
    )  # fmt: skip
    take(settings, store, away)
    now = datetime.now(UTC)
    with Pipeline(settings, store) as pipeline:
        pipeline.run([Incoming(customer(3), "archive", now, no_ack_reason="imported", live=False)],
                     lambda: now)  # fmt: skip
    assert len(told(store)) == 1


def test_a_digest_gathers_what_happened_in_its_interval(
    run: Run, settings: Settings, store: Store
) -> None:
    run("agent", "add", "dora", "dora@agents.example", "--notify", "digest:30m")
    start = datetime.now(UTC)
    take(settings, store, customer(1), start)
    take(settings, store, customer(2), start + timedelta(minutes=10))
    assert agent_mail(store) == []
    assert run_due(store, settings, start + timedelta(minutes=29)) == 0
    assert run_due(store, settings, start + timedelta(minutes=31)) == 1
    [(kind, rcpts, subject)] = agent_mail(store)
    assert (kind, rcpts) == ("digest", ["dora@agents.example"])
    assert "2 notifications (digest)" in subject
    with store.read() as session:
        item = session.exec(select(OutboxItem).where(OutboxItem.kind == "digest")).one()
    body = parsed(item.data).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "#1 Question 1" in body and "#2 Question 2" in body
    assert "Reply to this mail" not in body  # a digest answers no single ticket
    assert run_due(store, settings, start + timedelta(hours=2)) == 0  # nothing new


def test_agents_are_warned_once_of_an_sla_falling_due(
    run: Run, settings: Settings, store: Store
) -> None:
    run("agent", "add", "dora", "dora@agents.example", "--notify", "off")
    number = take(settings, store, customer(1))
    run("agent", "set", "dora", "--notify", "instant")
    with store.write() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        due = ticket.first_response_due
        assert due is not None
    run_due(store, settings, due - timedelta(hours=2))  # outside MAILSUPPORT_SLA_WARNING (1h)
    assert agent_mail(store) == []
    run_due(store, settings, due - timedelta(minutes=50))
    run_due(store, settings, due - timedelta(minutes=40))
    [(_, rcpts, subject)] = agent_mail(store)
    assert rcpts == ["dora@agents.example"] and "Due soon" in subject
    run("reply", "1", "-m", "On it.", "--as", "dora")  # answered: no first-answer warning
    assert run_due(store, settings, due) == 0 and len(agent_mail(store)) == 1
