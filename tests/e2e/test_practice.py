"""Support practice on real tickets: rules classify new tickets, SLA due times follow the
priority, escalation moves tickets between lines and tells the team."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import Ticket, TicketEvent, TicketTag
from tests.support.cli import cli
from tests.support.desk import take
from tests.support.mailfactory import make_message
from tests.support.smtpserver import SmtpServer

T0 = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # a Friday, 19:00 in Moscow
RULES = """
[[rule]]
name = "invoices"
if.text = ["счёт", "invoice"]
then.queue = "billing"
then.type = "billing"
then.tags = ["invoice"]

[[rule]]
name = "outage"
if.subject = ["не работает", "down"]
then.priority = "urgent"
then.type = "incident"
then.line = 2
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES, encoding="utf-8")
    return path


def desk(settings: Settings, **extra: Any) -> Settings:
    return settings.model_copy(update=extra)


def ticket(store: Store, number: int) -> Ticket:
    with store.read() as session:
        return session.exec(select(Ticket).where(Ticket.number == number)).one()


def test_rules_classify_new_tickets_and_say_why(
    settings: Settings, store: Store, rules_file: Path
) -> None:
    configured = desk(settings, rules_file=str(rules_file))
    number = take(configured, store, make_message("a@c.example", subject="Где мой счёт?"), T0)
    t = ticket(store, number)
    assert (t.queue, t.type, t.priority, t.line) == ("billing", "billing", "normal", 1)
    with store.read() as session:
        assert session.exec(select(TicketTag.tag)).all() == ["invoice"]
        [event] = session.exec(select(TicketEvent).where(TicketEvent.action == "classified")).all()
    assert event.actor == "rules"
    assert event.detail == "queue billing, type billing, tags invoice (rules: invoices)"

    down = take(configured, store, make_message("b@c.example", subject="Сайт не работает"), T0)
    t = ticket(store, down)
    assert (t.priority, t.type, t.line) == ("urgent", "incident", 2)

    # A reply to an existing ticket is not classified again.
    reply = make_message(
        "a2@c.example", subject="Re: Где мой счёт?", in_reply_to="<a@c.example>",
        body="Сайт не работает тоже",
    )  # fmt: skip
    assert take(configured, store, reply, T0) == number
    assert ticket(store, number).priority == "normal"


def test_a_broken_rules_file_stops_intake_before_any_mail(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[[rule]]\nname = "x"\nif.subjcet = "a"\nthen.queue = "q"\n')
    pipeline = Pipeline(desk(settings, rules_file=str(broken)), store)
    with pytest.raises(ConfigError, match=r"broken\.toml, line 3: unknown condition 'subjcet'"):
        pipeline.check()


def test_rules_check_and_test_commands(
    env_for_cli: dict[str, str], rules_file: Path, tmp_path: Path
) -> None:
    env = {**env_for_cli, "MAILSUPPORT_RULES_FILE": str(rules_file)}
    assert cli(env, "rules", "check").output.strip().endswith("2 rules, all fine")
    mail = tmp_path / "m.eml"
    mail.write_bytes(make_message(subject="Service down, invoice too"))
    result = cli(env, "rules", "test", str(mail))
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "rule 'invoices': text has 'invoice'",
        "rule 'outage': subject has 'down'",
        "  queue     billing",
        "  type      incident",
        "  priority  urgent",
        "  line      2",
        "  tags      invoice",
    ]
    as_json = json.loads(cli(env, "rules", "test", str(mail), "--json").output)
    assert as_json["set"]["type"] == "incident" and len(as_json["matched"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nname = 1\n")
    result = cli(env, "rules", "check", "--rules", str(bad))
    assert result.exit_code == 2 and "bad.toml, line 2" in result.output
    none = cli(env_for_cli, "rules", "check")
    assert none.exit_code == 2 and "MAILSUPPORT_RULES_FILE" in none.output


def test_sla_due_times_follow_priority_and_business_hours(
    settings: Settings, store: Store, rules_file: Path, env_for_cli: dict[str, str]
) -> None:
    configured = desk(
        settings,
        rules_file=str(rules_file),
        timezone="Europe/Moscow",
        business_hours="mon-fri 09:00-18:00",
    )
    # Friday 19:00 Moscow, urgent (1h first response, 1d resolution): Monday 10:00 Moscow.
    urgent = take(configured, store, make_message("u@c.example", subject="API down", date=T0), T0)
    t = ticket(store, urgent)
    assert t.first_response_due == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    # 1d = 24 working hours of 9-hour days: Wednesday 15:00 Moscow.
    assert t.resolution_due == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    normal = take(desk(settings), store, make_message("n@c.example", date=T0), T0)
    t = ticket(store, normal)
    assert t.first_response_due == T0 + timedelta(days=1)  # round the clock by default
    env = {**env_for_cli, "MAILSUPPORT_SLA_FIRST_RESPONSE": "high=2h"}
    assert cli(env, "priority", str(normal), "high", "--as", "Maria").exit_code == 0
    t = ticket(store, normal)
    assert t.first_response_due == T0 + timedelta(hours=2)
    assert t.resolution_due == T0 + timedelta(days=3)


def test_the_first_reply_is_the_first_response(
    settings: Settings, store: Store, smtp_env: dict[str, str], smtp_server: SmtpServer
) -> None:
    number = take(settings, store, make_message("f@c.example"), datetime.now(UTC))
    env = {**smtp_env, "MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}
    assert cli(env, "reply", str(number), "-m", "Looking into it.").exit_code == 0
    first = ticket(store, number).first_response_at
    assert first is not None
    assert cli(env, "reply", str(number), "-m", "Fixed.").exit_code == 0
    assert ticket(store, number).first_response_at == first


def test_escalate_moves_the_line_and_tells_the_team(
    settings: Settings, store: Store, smtp_env: dict[str, str], smtp_server: SmtpServer
) -> None:
    number = take(settings, store, make_message("e@c.example", subject="Ошибка 500"), T0)
    env = {
        **smtp_env,
        "MAILSUPPORT_AGENT": "Maria",
        "MAILSUPPORT_LINE_ADDRESSES": "2=l2@example.com",
    }
    result = cli(env, "escalate", str(number), "--reason", "needs a developer")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"ticket #{number} is on line 2 now; notice queued to l2@example.com"
    )
    [arrival] = smtp_server.arrivals
    assert arrival.rcpt_tos == ("l2@example.com",)
    notice = email.message_from_bytes(arrival.data, policy=email.policy.default)
    assert notice["Subject"] == f"[#{number}] escalated to line 2: Ошибка 500"
    assert notice["Auto-Submitted"] == "auto-generated"
    text = notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Reason: needs a developer" in text and "Hello, I cannot log in" in text
    assert ticket(store, number).line == 2

    again = cli(env, "escalate", str(number), "--to", "2")
    assert again.exit_code == 1 and "on line 2 already" in again.output
    back = cli(env, "escalate", str(number), "--to", "1")
    assert "no notice (no address for line 1" in back.output
    assert ticket(store, number).line == 1
    with store.read() as session:
        details = session.exec(
            select(TicketEvent.action, TicketEvent.detail, TicketEvent.actor).where(
                TicketEvent.action.in_(["escalated", "returned"])  # type: ignore[attr-defined]
            )
        ).all()
    assert details == [
        ("escalated", "line 1 -> 2: needs a developer", "Maria"),
        ("returned", "line 2 -> 1", "Maria"),
    ]
    assert cli(env, "escalate", str(number), "--to", "12").exit_code == 2


def test_list_by_line_type_and_due_times_and_show_says_what_is_late(
    settings: Settings, store: Store, rules_file: Path, env_for_cli: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    configured = desk(settings, rules_file=str(rules_file))
    old = take(configured, store, make_message("o@c.example", subject="Сайт не работает"),
               now - timedelta(hours=3))  # fmt: skip
    fresh = take(configured, store, make_message("f@c.example", subject="Где счёт?"), now)
    history = Pipeline(configured, store).ingest(
        Incoming(make_message("h@c.example"), "old.mbox#1", now - timedelta(days=90), live=False),
        now,
    )
    env = env_for_cli

    def numbers(*args: str) -> list[int]:
        result = cli(env, "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [t["number"] for t in json.loads(result.output)]

    assert numbers("--line", "2") == [old]
    assert numbers("--type", "billing") == [fresh]
    assert numbers("--overdue") == [old]  # urgent: first response was due in 1 h
    assert numbers("--due-within", "2d") == [fresh, old]  # normal: first response in 1 d
    assert history.ticket_number not in numbers("--due-within", "1000d")  # history: no SLA
    [row] = json.loads(cli(env, "list", "--json", "--line", "2").output)
    assert row["line"] == 2 and row["type"] == "incident" and row["first_response_at"] is None
    assert row["first_response_due"] is not None and row["resolution_due"] is not None

    shown = cli({**env, "NO_COLOR": "1"}, "show", str(old)).output.splitlines()
    assert shown[2] == "unassigned, line 2, type incident"
    assert shown[3].startswith("first response due ") and " OVERDUE, resolution due " in shown[3]
    bad = cli(env, "list", "--due-within", "soon")
    assert bad.exit_code == 2 and "--due-within" in bad.output
