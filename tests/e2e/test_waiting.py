"""What needs me: who wrote last, `list --waiting`, `list --requester`, `next`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mailsupport.store.db import Store
from tests.support.cli import cli
from tests.support.desk import ticket_of
from tests.support.mailfactory import make_message
from tests.support.smtpserver import SmtpServer


def customer(message_id: str, sender: str, subject: str, **kwargs: object) -> bytes:
    return make_message(
        message_id, sender=sender, subject=subject, date=datetime.now(UTC), **kwargs
    )  # type: ignore[arg-type]


def listed(env: dict[str, str], *args: str) -> list[int]:
    return [t["number"] for t in json.loads(cli(env, "list", "--json", *args).stdout)]


def test_who_wrote_last_follows_the_customer_and_the_agents(
    smtp_env: dict[str, str], smtp_server: SmtpServer, store: Store
) -> None:
    anna, ivan = "Anna <anna@customer.example.org>", "Ivan <ivan@customer.example.org>"
    for mid, who, subject in (("a1@x", anna, "Login"), ("i1@x", ivan, "Invoice")):
        assert cli(smtp_env, "ingest", input=customer(mid, who, subject)).exit_code == 0
    login, invoice = ticket_of(store, "a1@x"), ticket_of(store, "i1@x")
    # Acknowledged, but nobody has answered: both wait for us.
    assert len(smtp_server.arrivals) == 2
    rows = {t["number"]: t for t in json.loads(cli(smtp_env, "list", "--json").stdout)}
    assert rows[login.number]["last_writer"] == rows[invoice.number]["last_writer"] == "customer"
    assert sorted(listed(smtp_env, "--waiting")) == sorted([login.number, invoice.number])
    table = cli(smtp_env, "list").stdout.splitlines()
    assert "LAST" in table[0] and all(" cust " in line for line in table[1:])

    reply = cli(smtp_env, "reply", str(login.number), "-m", "Try now.", "--as", "olga")
    assert reply.exit_code == 0, reply.output
    assert listed(smtp_env, "--waiting") == [invoice.number]
    cli(smtp_env, "note", str(invoice.number), "-m", "checking billing", "--as", "olga")
    assert listed(smtp_env, "--waiting") == [invoice.number]  # a note answers nobody

    # Anna answers our reply: her ticket waits again.
    [ours] = [a for a in smtp_server.arrivals if a.rcpt_tos == ("anna@customer.example.org",)][-1:]
    ours_id = next(
        line.split(b"<", 1)[1].split(b">", 1)[0].decode()
        for line in ours.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    again = customer("a2@x", anna, "Re: Login", in_reply_to=ours_id)
    assert cli(smtp_env, "ingest", input=again).exit_code == 0
    assert sorted(listed(smtp_env, "--waiting")) == sorted([login.number, invoice.number])

    assert listed(smtp_env, "--requester", "ANNA@customer.example.org") == [login.number]
    assert listed(smtp_env, "--requester", "<ivan@customer.example.org>") == [invoice.number]
    assert listed(smtp_env, "--requester", "nobody@example.org") == []


def test_next_shows_my_most_urgent_waiting_ticket_then_unassigned_ones(
    env_for_cli: dict[str, str], store: Store
) -> None:
    env = env_for_cli
    senders = ("A <a@c.example>", "B <b@c.example>", "C <c@c.example>")
    for n, who in enumerate(senders):
        assert cli(env, "ingest", input=customer(f"n{n}@x", who, f"Case {n}")).exit_code == 0
    first, second, third = (ticket_of(store, f"n{n}@x").number for n in range(3))
    assert cli(env, "assign", str(first), "olga", "--as", "olga").exit_code == 0
    assert cli(env, "assign", str(second), "olga", "--as", "olga").exit_code == 0
    assert cli(env, "priority", str(second), "urgent", "--as", "olga").exit_code == 0

    shown = cli(env, "next", "--as", "olga", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["number"] == second  # mine, and urgent
    text = cli(env, "next", "--as", "olga").stdout
    assert text.startswith(f"#{second}  Case 1")

    # Someone else has none of their own: the unassigned one.
    assert json.loads(cli(env, "next", "--as", "boris", "--json").stdout)["number"] == third
    cli(env, "close", str(third), "--silent", "--as", "boris")
    nothing = cli(env, "next", "--as", "boris")
    assert nothing.exit_code == 1 and "nothing waits for boris" in nothing.stderr
