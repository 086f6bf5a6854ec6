"""The outbox keeps each ticket's order and sends without being asked, through a real SMTP
server: a later message never overtakes an earlier one of its ticket, `ingest` and the
agents' commands send what they queued, and one `poll` sends a whole burst."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailsupport.config import Settings
from mailsupport.outbox.delivery import deliver_due
from mailsupport.store.db import Store
from tests.support.cli import cli
from tests.support.desk import parsed, take
from tests.support.imapservers import PymapServer
from tests.support.mailboxes import imap_env
from tests.support.mailfactory import make_message
from tests.support.outbox import ANNA, T0, at, get, new_ticket, queue
from tests.support.smtpserver import SmtpServer

BOB = "bob@example.org"


def half(_: object = None) -> float:
    return 0.5


def arrived(smtp_server: SmtpServer) -> list[str]:
    """The Message-IDs of what the server took, in the order it took them."""
    return [str(parsed(a.data)["Message-ID"]).strip("<>") for a in smtp_server.arrivals]


# -- order within a ticket -------------------------------------------------------------------


def test_a_later_message_waits_while_an_earlier_one_of_its_ticket_waits_for_a_retry(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    first = queue(store, ticket_id, "first@example.com", [BOB])
    second = queue(store, ticket_id, "second@example.com")
    other = queue(store, new_ticket(store), "other@example.com")  # another ticket: not held
    smtp_server.refuse_rcpt("451 4.7.1 Greylisted, try again later", only=[BOB])

    assert deliver_due(store, smtp_settings, at(T0), rand=half) == Counter(retry=1, held=1, sent=1)
    assert arrived(smtp_server) == ["other@example.com"]
    held = get(store, second)
    assert (held.status, held.attempts, held.claim_token) == ("queued", 0, None)
    assert "earlier mail" in held.last_error

    # Due itself, but its ticket's first message is not: it is not even claimed.
    smtp_server.accept()
    retry_at = get(store, first).next_attempt_at
    assert deliver_due(store, smtp_settings, at(retry_at - timedelta(seconds=1))) == Counter()
    assert deliver_due(store, smtp_settings, at(retry_at)) == Counter(sent=2)
    assert arrived(smtp_server) == ["other@example.com", "first@example.com", "second@example.com"]
    assert get(store, other).status == get(store, second).status == "sent"


def test_an_earlier_message_that_failed_for_good_holds_nothing_back(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ticket_id = new_ticket(store)
    first = queue(store, ticket_id, "gone@example.com", [BOB])
    queue(store, ticket_id, "next@example.com")
    smtp_server.refuse_rcpt("550 5.1.1 No such user", only=[BOB])
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(failed=1, sent=1)
    assert get(store, first).status == "failed"
    assert arrived(smtp_server) == ["next@example.com"]


def test_a_deadline_leaves_the_rest_queued_and_due(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    ids = [queue(store, new_ticket(store), f"late{n}@example.com") for n in range(2)]
    counts = deliver_due(store, smtp_settings, at(T0), deadline=T0)
    assert counts == Counter(held=2)
    assert smtp_server.arrivals == []
    assert all(get(store, i).next_attempt_at == T0 for i in ids)
    assert deliver_due(store, smtp_settings, at(T0)) == Counter(sent=2)


@pytest.fixture
def agent_env(smtp_env: dict[str, str]) -> dict[str, str]:
    return {**smtp_env, "MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}


def customer_ticket(settings: Settings, store: Store) -> int:
    return take(settings, store, make_message("q1@customer.example.org", subject="No invoice"))


def kinds(smtp_server: SmtpServer) -> list[str]:
    """What arrived, by the template that made it: "reply" or "closed"."""
    found = []
    for arrival in smtp_server.arrivals:
        body = parsed(arrival.data).get_body(("plain",))
        assert body is not None
        found.append("reply" if "The invoice is on its way." in body.get_content() else "closed")
    return found


def test_reply_queued_then_close_queued_then_one_flush_arrive_in_that_order(
    agent_env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = str(customer_ticket(settings, store))
    assert cli(agent_env, "reply", number, "-m", "The invoice is on its way.", "--no-send")
    closed = cli(agent_env, "close", number, "--no-send")
    assert closed.exit_code == 0, closed.output
    flushed = cli(agent_env, "outbox", "flush")
    assert flushed.exit_code == 0, flushed.output
    assert kinds(smtp_server) == ["reply", "closed"]


def test_close_sends_the_reply_queued_before_it_first(
    agent_env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = customer_ticket(settings, store)
    queued = cli(agent_env, "reply", str(number), "-m", "The invoice is on its way.", "--no-send")
    assert queued.exit_code == 0, queued.output
    assert smtp_server.arrivals == []
    closed = cli(agent_env, "close", str(number))
    assert closed.exit_code == 0, closed.output
    assert closed.output.splitlines()[-2:] == [
        f"sent first: 1 earlier message of ticket #{number}",
        "sent",
    ]
    assert kinds(smtp_server) == ["reply", "closed"]


def test_close_behind_a_reply_that_waits_for_a_retry_is_not_sent_before_it(
    agent_env: dict[str, str], settings: Settings, store: Store, smtp_server: SmtpServer
) -> None:
    number = str(customer_ticket(settings, store))
    smtp_server.refuse_data("451 4.3.0 Try again later")
    replied = cli(agent_env, "reply", number, "-m", "The invoice is on its way.")
    assert replied.output.splitlines()[-1].startswith("not sent yet: the server")
    smtp_server.accept()
    closed = cli(agent_env, "close", number)
    assert closed.exit_code == 0, closed.output
    assert closed.output.splitlines()[-1].startswith("not sent yet: it waits behind earlier")
    assert smtp_server.arrivals == []
    # When the reply's retry comes, both go, the reply first.
    later = datetime.now(UTC) + timedelta(hours=1)
    assert deliver_due(store, settings.model_copy(update=_smtp(smtp_server)), at(later)) == (
        Counter(sent=2)
    )
    assert kinds(smtp_server) == ["reply", "closed"]


def _smtp(server: SmtpServer) -> dict[str, object]:
    return {"smtp_host": server.host, "smtp_port": server.port, "smtp_security": "none"}


# -- ingest sends its acknowledgement --------------------------------------------------------


def test_ingest_sends_its_acknowledgement_before_it_exits(
    smtp_env: dict[str, str], smtp_server: SmtpServer
) -> None:
    result = cli(smtp_env, "ingest", input=make_message("pipe1@customer.example.org"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "outbox: 1 sent"
    [ack] = smtp_server.arrivals
    assert ack.rcpt_tos == (ANNA,)
    assert parsed(ack.data)["In-Reply-To"] == "<pipe1@customer.example.org>"


def test_ingest_with_smtp_down_stores_the_message_and_leaves_the_ack_queued(
    smtp_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    smtp_server.stop()
    result = cli(smtp_env, "ingest", input=make_message("pipe2@customer.example.org"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("ticket #1: ")
    assert result.stdout.splitlines()[-1] == "outbox: 1 retry"
    waiting = get(store, 1)
    assert (waiting.status, waiting.attempts) == ("queued", 1)
    smtp_server.start()
    flushed = cli(smtp_env, "outbox", "flush", "--all")
    assert flushed.exit_code == 0, flushed.output
    assert len(smtp_server.arrivals) == 1


def test_ingest_without_smtp_tries_no_sending(env_for_cli: dict[str, str]) -> None:
    result = cli(env_for_cli, "ingest", input=make_message("pipe3@customer.example.org"))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ticket #1: ")
    assert "outbox" not in result.output


def test_import_with_ack_sends_the_acknowledgements_it_queued(
    smtp_env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    for n in (1, 2):
        (tmp_path / f"{n}.eml").write_bytes(make_message(f"imp{n}@customer.example.org"))
    result = cli(smtp_env, "import", "--ack", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "outbox: 2 sent"
    replied_to = {parsed(m.data)["In-Reply-To"] for m in smtp_server.arrivals}
    assert replied_to == {"<imp1@customer.example.org>", "<imp2@customer.example.org>"}


def test_import_without_ack_sends_nothing(
    smtp_env: dict[str, str], smtp_server: SmtpServer, tmp_path: Path
) -> None:
    (tmp_path / "1.eml").write_bytes(make_message("old1@customer.example.org"))
    result = cli(smtp_env, "import", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "outbox" not in result.output
    assert smtp_server.arrivals == []


def test_quarantine_retry_with_ack_sends_the_acknowledgement(
    smtp_env: dict[str, str], smtp_server: SmtpServer
) -> None:
    raw = make_message("late@customer.example.org", body="x" * 3000)
    small = {**smtp_env, "MAILSUPPORT_MAX_MESSAGE_BYTES": "1000"}
    assert cli(small, "ingest", input=raw).output.startswith("quarantined: message is ")
    assert smtp_server.arrivals == []
    result = cli(smtp_env, "quarantine", "retry", "--all", "--ack")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "outbox: 1 sent"
    [ack] = smtp_server.arrivals
    assert parsed(ack.data)["In-Reply-To"] == "<late@customer.example.org>"


# -- a burst does not wait -------------------------------------------------------------------


@pytest.mark.slow
def test_one_poll_sends_every_acknowledgement_of_a_burst(
    env_for_cli: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    # Over one IMAP batch (100 here) and one round of the outbox's claims (100 a round):
    # the second batch's and the second round's acknowledgements must go out too.
    burst = 130
    with PymapServer() as imap:
        env = imap_env(
            env_for_cli, imap, imap_batch="100", ack_domain_limit="0",
            smtp_host=smtp_server.host, smtp_port=str(smtp_server.port), smtp_security="none",
        )  # fmt: skip
        first = cli(env, "poll")  # the desk starts here: what arrives from now on is new
        assert first.exit_code == 0, first.output
        now = datetime.now(UTC)
        with imap.client() as client:
            for i in range(burst):
                sender = f"Customer {i} <customer{i}@shop{i}.example.net>"
                raw = make_message(f"burst{i}@customer.example.org", sender=sender, date=now)
                client.append("INBOX", raw)
        result = cli(env, "poll")
    assert result.exit_code == 0, result.output
    assert f"outbox: {burst} sent" in result.output
    assert len(smtp_server.arrivals) == burst


def test_the_daemons_outbox_task_sends_more_than_one_round(
    store: Store, smtp_settings: Settings, smtp_server: SmtpServer
) -> None:
    from mailsupport.daemon import OUTBOX, periodic_tasks

    now = datetime.now(UTC)
    for n in range(130):
        queue(store, new_ticket(store), f"round{n}@example.com", when=now)
    [task] = [t for t in periodic_tasks(smtp_settings, store) if t.name == OUTBOX]
    task.run()
    assert len(smtp_server.arrivals) == 130
