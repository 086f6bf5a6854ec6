"""One desk, several addresses: mail is filed in the mailbox it was sent to and answered from
that mailbox's address, in its language, through a real SMTP server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailsupport.store.db import Store
from tests.support.cli import cli
from tests.support.desk import parsed, ticket_of
from tests.support.mailfactory import make_message
from tests.support.smtpserver import SmtpServer

MAILBOXES = """\
[[mailbox]]
name = "support"
address = "support@example.com"
aliases = ["help@example.com"]

[[mailbox]]
name = "billing"
address = "billing@example.com"
display_name = "Example Billing"
queue = "billing"
language = "ru"

[[mailbox]]
name = "sales"
address = "sales@example.com"
display_name = "Example Sales"
language = "en"
"""


@pytest.fixture
def desk_env(smtp_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "mailboxes.toml"
    path.write_text(MAILBOXES)
    return smtp_env | {"MAILSUPPORT_MAILBOXES_FILE": str(path)}


def customer_mail(message_id: str, to: str, **kwargs: object) -> bytes:
    return make_message(message_id, to=to, date=datetime.now(UTC), **kwargs)  # type: ignore[arg-type]


def test_each_address_files_its_ticket_and_is_answered_from_it(
    desk_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    for n, to in enumerate(["billing@example.com", "Help <help@example.com>", "sales@example.com"]):
        done = cli(desk_env, "ingest", input=customer_mail(f"c{n}@customer.example.org", to))
        assert done.exit_code == 0, done.output
    billing, support, sales = (ticket_of(store, f"c{n}@customer.example.org") for n in range(3))
    assert (billing.mailbox, billing.queue) == ("billing", "billing")
    assert (support.mailbox, support.queue) == ("support", "")
    assert (sales.mailbox, sales.queue) == ("sales", "")

    acks = {a.mail_from: parsed(a.data) for a in smtp_server.arrivals}
    assert set(acks) == {"billing@example.com", "support@example.com", "sales@example.com"}
    to_billing = acks["billing@example.com"]
    assert to_billing["From"] == "Example Billing <billing@example.com>"
    assert "Здравствуйте" in to_billing.get_body(("plain",)).get_content()  # the mailbox's ru
    assert to_billing["Message-ID"].endswith("@example.com>")
    assert acks["sales@example.com"]["From"] == "Example Sales <sales@example.com>"
    assert "Hello" in acks["sales@example.com"].get_body(("plain",)).get_content()

    # The customer's answer to the billing acknowledgement threads back into its ticket.
    answer = customer_mail(
        "c9@customer.example.org",
        "billing@example.com",
        subject=f"Re: {to_billing['Subject']}",
        in_reply_to=to_billing["Message-ID"].strip("<>"),
    )
    assert cli(desk_env, "ingest", input=answer).exit_code == 0
    assert ticket_of(store, "c9@customer.example.org").id == billing.id

    listed = json.loads(cli(desk_env, "list", "--mailbox", "billing", "--json").stdout)
    assert [(t["number"], t["mailbox"]) for t in listed] == [(billing.number, "billing")]
    shown = cli(desk_env, "show", str(billing.number))
    assert "mailbox billing <billing@example.com>" in shown.stdout
    unknown = cli(desk_env, "list", "--mailbox", "nosuch")
    assert unknown.exit_code == 2 and "no mailbox named 'nosuch'" in unknown.stderr


def test_plus_addressing_and_a_message_to_two_of_our_addresses(
    desk_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    plus = customer_mail("p1@customer.example.org", "support+billing@example.com")
    assert cli(desk_env, "ingest", input=plus).exit_code == 0
    assert ticket_of(store, "p1@customer.example.org").mailbox == "billing"

    # Sent to two of our addresses, delivered to both mailboxes: one ticket.
    both = customer_mail("b1@customer.example.org", "sales@example.com", cc="billing@example.com")
    first = cli(desk_env, "ingest", "--mailbox", "sales", input=both)
    second = cli(desk_env, "ingest", "--mailbox", "billing", input=both)
    assert first.exit_code == second.exit_code == 0
    assert "duplicate" in second.stdout
    ticket = ticket_of(store, "b1@customer.example.org")
    assert ticket.mailbox == "sales"
    listed = json.loads(cli(desk_env, "list", "--json").stdout)
    assert len(listed) == 2
    acked = [a.mail_from for a in smtp_server.arrivals]
    assert acked == ["billing@example.com", "sales@example.com"]  # one acknowledgement each


def test_an_agent_answers_from_another_of_our_addresses(
    desk_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    assert (
        cli(
            desk_env,
            "ingest",
            input=customer_mail("r1@customer.example.org", "support@example.com"),
        ).exit_code
        == 0
    )
    ticket = ticket_of(store, "r1@customer.example.org")
    smtp_server.arrivals.clear()
    done = cli(desk_env, "reply", str(ticket.number), "--from", "billing@example.com",
               "-m", "Your refund is on its way.", "--as", "olga")  # fmt: skip
    assert done.exit_code == 0, done.output
    [arrival] = smtp_server.arrivals
    assert arrival.mail_from == "billing@example.com"
    assert parsed(arrival.data)["From"] == "Example Billing <billing@example.com>"

    refused = cli(desk_env, "reply", str(ticket.number), "--from", "ceo@example.com", "-m", "x")
    assert refused.exit_code == 2
    assert "--from ceo@example.com: not one of our addresses" in refused.stderr


def test_a_bad_mailboxes_file_stops_every_command_naming_line_and_key(
    desk_env: dict[str, str], tmp_path: Path
) -> None:
    Path(desk_env["MAILSUPPORT_MAILBOXES_FILE"]).write_text(
        MAILBOXES.replace('queue = "billing"', 'queue = ["billing"]')
    )
    problem = "line 10, mailbox 2, queue: must be a string"
    for command in (["list"], ["status", "--offline"], ["reply", "1", "-m", "x"], ["poll"]):
        done = cli(desk_env, *command)
        assert done.exit_code == 2, (command, done.output)
        assert "mailboxes file" in done.stderr and problem in done.stderr
    doctor = cli(desk_env, "doctor")  # lists it with everything else it finds
    assert doctor.exit_code == 1 and "FAIL  mailboxes: " in doctor.stdout
    assert problem in doctor.stdout
    # An MTA's delivery keeps the message queued until the file is fixed.
    ingest = cli(desk_env, "ingest", input=customer_mail("x@customer.example.org", "a@b.c"))
    assert ingest.exit_code == 75 and problem in ingest.stderr


def test_three_mailboxes_on_dovecot_each_answered_from_its_address(
    smtp_env: dict[str, str], smtp_server: SmtpServer, store: Store, tmp_path: Path
) -> None:
    """The issue's whole case: two Dovecot users, three mailboxes (one with two aliases),
    one poll; each ticket in its queue and language, answered from its address; the
    customer's answer threads back; a wrong password on one leaves the others working."""
    from tests.support.imapservers import DOVECOT_BINARY, DovecotServer

    if DOVECOT_BINARY is None:
        pytest.skip("Dovecot is not installed (no /usr/sbin/dovecot and none on PATH)")
    desk_user, shop_user = "desk@example.test", "shop@example.test"
    with DovecotServer(users={desk_user: None, shop_user: None}) as dovecot:
        dovecot.create_folder("Sales", user=shop_user)

        def box(name: str, user: str, folder: str, password: str = "", **own: str) -> str:
            lines = ["[[mailbox]]", f'name = "{name}"']
            lines += [f"{k} = {json.dumps(v)}" for k, v in own.items()]
            lines += [
                f'imap_host = "{dovecot.host}"', f"imap_port = {dovecot.port}",
                'imap_security = "none"', f'imap_user = "{user}"', f'imap_folder = "{folder}"',
                f"imap_password = {json.dumps(password or dovecot.users[user])}",
            ]  # fmt: skip
            return "\n".join(lines) + "\n"

        def write(wrong: str = "") -> dict[str, str]:
            path = tmp_path / "mailboxes.toml"
            path.write_text(
                box("support", desk_user, "INBOX", "nope" if wrong == "support" else "",
                    address="support@example.com")
                + 'aliases = ["help@example.com", "hilfe@example.com"]\n'
                + box("billing", shop_user, "INBOX", "nope" if wrong == "billing" else "",
                      address="billing@example.com", display_name="Example Billing",
                      queue="billing", language="ru")
                + box("sales", shop_user, "Sales", "nope" if wrong == "sales" else "",
                      address="sales@example.com", display_name="Example Sales")
            )  # fmt: skip
            return smtp_env | {"MAILSUPPORT_MAILBOXES_FILE": str(path)}

        env = write()
        assert cli(env, "poll").exit_code == 0  # the first poll: what is there is history
        deliveries = {
            "support": ("hilfe@example.com", desk_user, "INBOX"),
            "billing": ("billing@example.com", shop_user, "INBOX"),
            "sales": ("sales@example.com", shop_user, "Sales"),
        }
        for name, (address, user, folder) in deliveries.items():
            raw = customer_mail(f"{name}@customer.example.org", address)
            dovecot.append(raw.replace(b"\n", b"\r\n"), folder=folder, user=user)
        done = cli(env, "poll")
        assert done.exit_code == 0, done.output
        tickets = {n: ticket_of(store, f"{n}@customer.example.org") for n in deliveries}
        assert {n: (t.mailbox, t.queue) for n, t in tickets.items()} == {
            "support": ("support", ""),
            "billing": ("billing", "billing"),
            "sales": ("sales", ""),
        }
        acks = {a.mail_from: parsed(a.data) for a in smtp_server.arrivals}
        assert set(acks) == {"support@example.com", "billing@example.com", "sales@example.com"}
        billing_ack = acks["billing@example.com"]
        assert billing_ack["From"] == "Example Billing <billing@example.com>"
        assert "Здравствуйте" in billing_ack.get_body(("plain",)).get_content()

        answer = customer_mail(
            "again@customer.example.org",
            "billing@example.com",
            subject=f"Re: {billing_ack['Subject']}",
            in_reply_to=billing_ack["Message-ID"].strip("<>"),
        )
        dovecot.append(answer.replace(b"\n", b"\r\n"), user=shop_user)
        assert cli(env, "poll").exit_code == 0
        assert ticket_of(store, "again@customer.example.org").id == tickets["billing"].id

        # A wrong password on one mailbox: the other two keep working; status says which.
        env = write(wrong="sales")
        late = customer_mail("late@customer.example.org", "support@example.com")
        dovecot.append(late.replace(b"\n", b"\r\n"), user=desk_user)
        partly = cli(env, "poll")
        assert partly.exit_code == 2
        assert "sales" in partly.stderr
        assert ticket_of(store, "late@customer.example.org").mailbox == "support"
        report = {
            b["name"]: b for b in json.loads(cli(env, "status", "--json").stdout)["mailboxes"]
        }
        assert report["sales"]["last_error"] and not report["support"]["last_error"]
        assert not report["billing"]["last_error"]


def test_a_mailbox_with_its_own_smtp_server_sends_when_the_desk_has_none(
    env_for_cli: dict[str, str], smtp_server: SmtpServer, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "mailboxes.toml"
    path.write_text(
        MAILBOXES.replace(
            'language = "ru"\n',
            f'language = "ru"\nsmtp_host = "{smtp_server.host}"\nsmtp_port = {smtp_server.port}\n'
            'smtp_security = "none"\nsmtp_timeout = 5\n',
        )
    )
    env = env_for_cli | {"MAILSUPPORT_MAILBOXES_FILE": str(path)}
    for n, to in enumerate(["billing@example.com", "sales@example.com"]):
        assert (
            cli(env, "ingest", input=customer_mail(f"o{n}@customer.example.org", to)).exit_code == 0
        )
    # billing's acknowledgement left through billing's server; sales has none to send with.
    assert [a.mail_from for a in smtp_server.arrivals] == ["billing@example.com"]
    sales = ticket_of(store, "o1@customer.example.org")
    shown = cli(env, "show", str(sales.number))
    assert "no acknowledgement: outgoing mail is off" in shown.stdout
