"""`reply` for a working day: the status a reply leaves (MAILSUPPORT_REPLY_STATUS). No SMTP
server: what a reply says is read back from the store, where it is kept as sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col, select

from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem
from tests.support.cli import Run
from tests.support.mailfactory import make_message

MARKER = "# ------------------------ >8 ------------------------"
AGENT = {"MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}


def ingest(run: Run, message_id: str, **kwargs: object) -> int:
    """A customer's mail through `ingest`; its ticket's number."""
    done = run("ingest", input=make_message(message_id, **kwargs), env=AGENT)  # type: ignore[arg-type]
    assert done.exit_code == 0, done.output
    return int(done.stdout.split("#", 1)[1].split(":")[0])  # "ticket #12: ..."


def status(run: Run, number: int) -> str:
    return str(json.loads(run("show", str(number), "--json").stdout)["status"])


def replies(store: Store) -> list[Message]:
    """Our replies as stored (the text exactly as mailed), oldest first."""
    with store.read() as session:
        query = select(Message).where(Message.direction == "out").order_by(col(Message.id))
        return list(session.exec(query).all())


def queued(store: Store) -> int:
    with store.read() as session:
        return len(session.exec(select(OutboxItem)).all())


# ------------------------------------------------------------------------------------------
# MAILSUPPORT_REPLY_STATUS
# ------------------------------------------------------------------------------------------


def test_a_reply_leaves_the_ticket_pending_and_the_customers_answer_opens_it(
    run: Run, store: Store
) -> None:
    number = ingest(run, "q1@customer.example.org")
    done = run("reply", str(number), "-m", "Please try again now.", env=AGENT)
    assert done.exit_code == 0, done.output
    assert f"ticket #{number}: reply queued as <" in done.stdout
    assert done.stdout.splitlines()[1].endswith(", pending")
    assert status(run, number) == "pending"

    [ours] = replies(store)
    ingest(run, "q2@customer.example.org", subject="Re: Cannot log in",
           in_reply_to=ours.message_id, body="Still broken.")  # fmt: skip
    assert status(run, number) == "open"  # the customer answered: back to the agents


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("open", [], "open"),
        ("closed", [], "closed"),
        ("pending", ["--open"], "open"),
        ("open", ["--pending"], "pending"),
        ("open", ["--close"], "closed"),
        ("CLOSED", ["--open"], "open"),
    ],
)
def test_the_setting_says_the_status_and_the_agents_flag_wins(
    setting: str, flags: list[str], expected: str, run: Run
) -> None:
    number = ingest(run, "q1@customer.example.org")
    env = {**AGENT, "MAILSUPPORT_REPLY_STATUS": setting}
    done = run("reply", str(number), "-m", "Done.", *flags, env=env)
    assert done.exit_code == 0, done.output
    assert status(run, number) == expected


def test_a_closed_ticket_stays_closed_unless_the_agent_says(run: Run) -> None:
    number = ingest(run, "q1@customer.example.org")
    assert run("close", str(number), "--silent", env=AGENT).exit_code == 0
    assert run("reply", str(number), "-m", "One more thing.", env=AGENT).exit_code == 0
    assert status(run, number) == "closed"
    assert run("reply", str(number), "-m", "Reopened.", "--pending", env=AGENT).exit_code == 0
    assert status(run, number) == "pending"


def test_each_mailbox_may_choose_its_reply_status(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "mailboxes.toml"
    path.write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.com"\n\n'
        '[[mailbox]]\nname = "sales"\naddress = "sales@example.com"\nreply_status = "open"\n'
    )
    env = {**AGENT, "MAILSUPPORT_MAILBOXES_FILE": str(path)}
    support = run("ingest", input=make_message("s1@customer.example.org"), env=env)
    sales = run("ingest", input=make_message("s2@c.example.org", to="sales@example.com"), env=env)
    for number in (1, 2):
        assert run("reply", str(number), "-m", "Answered.", env=env).exit_code == 0
    assert (support.exit_code, sales.exit_code) == (0, 0)
    assert [status(run, 1), status(run, 2)] == ["pending", "open"]

    path.write_text(path.read_text().replace('reply_status = "open"', 'reply_status = "later"'))
    bad = run("list", env=env)
    assert bad.exit_code == 2 and "line 8, mailbox 2, reply_status" in bad.output


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["-m", "x", "--open", "--close"], {}, "choose one of --close, --pending and --open"),
        (["-m", "x"], {"MAILSUPPORT_REPLY_STATUS": "later"}, "MAILSUPPORT_REPLY_STATUS"),
    ],
)
def test_reply_status_mistakes_are_one_line_usage_errors(
    args: list[str], env: dict[str, str], words: str, run: Run, store: Store
) -> None:
    number = ingest(run, "q1@customer.example.org")
    done = run("reply", str(number), *args, env={**AGENT, **env})
    assert done.exit_code == 2 and words in done.output
    assert len(done.output.strip().splitlines()) == 1 and queued(store) == 0
