"""Who is who (issue 14): attacks replayed as real mail, through `ingest` (an MTA pipe) and
`poll` (Dovecot), on every backend. Only proven identity opens a ticket's conversation: a
From of our own address proves nothing, an ambiguous From is a stranger, later Cc's are
not mailed until an agent adds them, and merged customers never read each other's mail."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from typing import Any

import pytest
from sqlmodel import select

from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem, Participant, Ticket
from tests.support.cli import cli
from tests.support.desk import ticket_of
from tests.support.mailboxes import imap_env
from tests.support.mailfactory import BASE_TIME, make_message

ANNA = "anna@cust.example"
BOB = "bob@other.example"
EVE = "eve@evil.example"
SUPPORT = "support@example.com"

Deliver = Callable[[bytes], None]


def raw_mail(headers: list[tuple[str, str]], body: str = "Hello.\n") -> bytes:
    """A message written header by header, exactly as given (hostile headers included)."""
    head = [("Date", format_datetime(BASE_TIME)), *headers]
    lines = [f"{name}: {value}" for name, value in head]
    return ("\r\n".join([*lines, "Content-Type: text/plain; charset=utf-8", "", body])).encode()


@pytest.fixture(params=["ingest", "poll"])
def deliver(request: pytest.FixtureRequest, env_for_cli: dict[str, str]) -> Iterator[Deliver]:
    """Hands a message to the desk as an MTA pipe would, or through a real IMAP mailbox."""
    if request.param == "ingest":

        def ingest(raw: bytes) -> None:
            result = cli(env_for_cli, "ingest", input=raw)
            assert result.exit_code == 0, result.output

        yield ingest
        return
    server = request.getfixturevalue("dovecot_server")
    env = imap_env(env_for_cli, server, imap_start="all")

    def poll(raw: bytes) -> None:
        server.append(raw)
        result = cli(env, "poll")
        assert result.exit_code == 0, result.output

    yield poll


@pytest.fixture
def agent(env_for_cli: dict[str, str]) -> Callable[..., Any]:
    env = {**env_for_cli, "MAILSUPPORT_AGENT": "maria"}
    return lambda *args: cli(env, *args)


def roles(store: Store, number: int) -> dict[str, str]:
    with store.read() as session:
        ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
        rows = session.exec(select(Participant).where(Participant.ticket_id == ticket.id))
        return {p.address: p.role for p in rows}


def last_reply(store: Store) -> OutboxItem:
    with store.read() as session:
        items = session.exec(select(OutboxItem).where(OutboxItem.kind == "reply")).all()
        return max(items, key=lambda i: i.id or 0)


def reply(agent: Callable[..., Any], number: int, *args: str) -> Any:
    result = agent("reply", str(number), "-m", "Your temporary password is 7XK-22.", *args)
    assert result.exit_code == 0, result.output
    return result


def anna_asks(deliver: Deliver, message_id: str = "a1@cust.example", **extra: Any) -> None:
    deliver(
        make_message(
            message_id, sender=f"Anna <{ANNA}>", subject="Cannot log in", body="My login fails.",
            **extra,
        )
    )  # fmt: skip


# -- 1. A From of our own address proves nothing -------------------------------------------------


@pytest.mark.slow
def test_forged_mail_from_our_address_is_a_strangers(
    deliver: Deliver, agent: Callable[..., Any], store: Store
) -> None:
    anna_asks(deliver)
    deliver(make_message("b1@other.example", sender=BOB, subject="Invoice"))
    forged = raw_mail(
        [
            ("From", f"Example Support <{SUPPORT}>"),
            ("To", EVE),
            ("Subject", "Re: Cannot log in [#1]"),
            ("Message-ID", "<forged-1@example.com>"),
            ("In-Reply-To", "<a1@cust.example>"),
            ("References", "<a1@cust.example> <b1@other.example>"),
        ]
    )
    deliver(forged)

    stranger = ticket_of(store, "forged-1@example.com")
    first = ticket_of(store, "a1@cust.example")
    assert stranger.number == 3 and stranger.follows_id == first.id  # a ticket of its own
    assert stranger.requester == ""  # nobody to mail: not us, not eve
    assert ticket_of(store, "b1@other.example").number == 2  # the two customers not merged
    with store.read() as session:
        row = session.exec(select(Message).where(Message.message_id == "forged-1@example.com"))
        message = row.one()
    assert message.direction == "in"
    assert "our own address, without our signed Message-ID" in message.thread_reason
    assert message.ack_decision.startswith("no acknowledgement")
    assert roles(store, 1) == {ANNA: "requester"}  # eve joined nothing

    reply(agent, 1)
    assert last_reply(store).recipients == [ANNA]


# -- 2. The sender is exactly one clear mailbox ---------------------------------------------------

AMBIGUOUS_FROMS = [
    [("From", f"{ANNA} <{EVE}>")],  # an address outside the brackets, another inside
    [("From", f'"{ANNA}" <{EVE}>')],  # a display name that is an address
    [("From", f"{ANNA}, {EVE}")],  # two mailboxes
    [("From", f"Anna <{ANNA}>"), ("From", EVE)],  # two From headers
]


@pytest.mark.slow
@pytest.mark.parametrize("froms", AMBIGUOUS_FROMS, ids=["outside", "name", "two", "headers"])
def test_an_ambiguous_from_is_a_stranger(
    deliver: Deliver,
    agent: Callable[..., Any],
    store: Store,
    env_for_cli: dict[str, str],
    froms: list[tuple[str, str]],
) -> None:
    anna_asks(deliver)
    deliver(
        raw_mail(
            [
                *froms,
                ("To", SUPPORT),
                ("Cc", EVE),
                ("Subject", "Re: Cannot log in [#1]"),
                ("Message-ID", "<amb-1@evil.example>"),
                ("In-Reply-To", "<a1@cust.example>"),
            ]
        )
    )
    stranger = ticket_of(store, "amb-1@evil.example")
    assert stranger.number == 2 and stranger.requester == ""
    assert roles(store, 1) == {ANNA: "requester"}
    assert roles(store, 2) == {EVE: "seen"}  # recorded, never mailed
    shown = json.loads(cli(env_for_cli, "show", "2", "--json").stdout)
    [message] = shown["messages"]
    assert "a stranger:" in message["thread_reason"]
    reply(agent, 1)
    assert last_reply(store).recipients == [ANNA]
    refused = agent("reply", "2", "-m", "hi")
    assert refused.exit_code == 1 and "name one with --to" in refused.stderr


# -- 3. Whom later mail brings in is shown, and mailed only once an agent adds them ---------------


@pytest.mark.slow
def test_cc_from_later_mail_is_not_mailed_until_an_agent_adds_it(
    deliver: Deliver, agent: Callable[..., Any], store: Store
) -> None:
    anna_asks(deliver, cc=f"Boss <boss@{ANNA.split('@')[1]}>")  # a colleague on the first mail
    deliver(
        make_message(
            "a2@cust.example", sender=f"Anna <{ANNA}>", cc=EVE,
            subject="Re: Cannot log in", in_reply_to="<a1@cust.example>",
        )
    )  # fmt: skip
    boss = f"boss@{ANNA.split('@')[1]}"
    assert roles(store, 1) == {ANNA: "requester", boss: "cc", EVE: "seen"}

    said = reply(agent, 1)
    assert last_reply(store).recipients == [ANNA, boss]
    assert f"ticket #1: reply to Anna <{ANNA}>; cc Boss <{boss}>; not mailed: {EVE}" in said.stdout

    listed = agent("cc", "1", f"+{EVE}")
    assert listed.exit_code == 0, listed.output
    assert f"cc Boss <{boss}>, {EVE}" in listed.stdout
    reply(agent, 1)
    assert last_reply(store).recipients == [ANNA, boss, EVE]

    assert agent("cc", "1", f"-{boss}").exit_code == 0
    reply(agent, 1, "--cc", "Lawyer <lawyer@cust.example>")
    assert last_reply(store).recipients == [ANNA, EVE, "lawyer@cust.example"]
    reply(agent, 1)  # --cc copies on later replies too
    assert last_reply(store).recipients == [ANNA, EVE, "lawyer@cust.example"]
    removing_anna = agent("cc", "1", f"-{ANNA}")
    assert removing_anna.exit_code == 1 and "is the customer" in removing_anna.stderr
    typo = agent("cc", "1", "+lawyer.cust.example")
    assert typo.exit_code == 2
    assert "not an email address: 'lawyer.cust.example' (write +addr or -addr)" in typo.stderr


@pytest.mark.slow
def test_one_message_adds_at_most_max_participants(
    deliver: Deliver, agent: Callable[..., Any], store: Store
) -> None:
    crowd = ", ".join(f"victim{i}@example.net" for i in range(1900))
    deliver(make_message("crowd@spam.example", sender=f"Spammer <{EVE}>", cc=crowd))
    people = roles(store, 1)
    assert len(people) == 20 and people[EVE] == "requester"
    reply(agent, 1)
    assert len(last_reply(store).recipients) == 20
    shown = json.loads(agent("show", "1", "--json", "--history").stdout)
    [event] = [e for e in shown["history"] if e["action"] == "participants"]
    # The parser keeps the first 1,000 addresses of a header: Eve and 1,000 of hers, 20 added.
    assert event["detail"].startswith("981 more addresses of <crowd@spam.example> not added")


# -- 4. Merges never leak -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_merge_of_two_customers_never_mails_one_the_others_words(
    deliver: Deliver, agent: Callable[..., Any], store: Store
) -> None:
    anna_asks(deliver)
    deliver(
        make_message(
            "b1@other.example", sender=BOB, subject="Invoice",
            body="Bob's account number is 40817810099910004312.",
        )
    )  # fmt: skip
    assert agent("merge", "1", "2").exit_code == 0

    refused = agent("reply", "1", "-m", "hello")
    assert refused.exit_code == 2
    assert f"several customers ({ANNA}, {BOB})" in refused.stderr and "--to" in refused.stderr

    reply(agent, 1, "--to", ANNA)
    item = last_reply(store)
    assert item.recipients == [ANNA]
    assert b"40817810099910004312" not in item.data  # Bob's words are not quoted to Anna
    assert b"a1@cust.example" in item.data  # it answers Anna's own message
    reply(agent, 1, "--to", BOB)
    assert b"My login fails" not in last_reply(store).data


def test_automatic_merges_join_only_the_same_customers_tickets(
    deliver: Deliver, store: Store
) -> None:
    anna_asks(deliver)
    deliver(make_message("b1@other.example", sender=BOB, subject="Invoice", cc=ANNA))
    # Anna takes part in both tickets; her answer to both does not make them one.
    deliver(
        make_message(
            "a2@cust.example", sender=f"Anna <{ANNA}>", subject="Re: both",
            in_reply_to="<a1@cust.example>", references="<a1@cust.example> <b1@other.example>",
        )
    )  # fmt: skip
    assert ticket_of(store, "a2@cust.example").number == 1
    assert ticket_of(store, "b1@other.example").number == 2
    with store.read() as session:
        row = session.exec(select(Message).where(Message.message_id == "a2@cust.example")).one()
    assert "not merged with #2: another customer's ticket" in row.thread_reason


# -- the legitimate cases keep working ------------------------------------------------------------


@pytest.mark.slow
def test_a_customer_answering_from_a_second_address_through_our_signed_id(
    deliver: Deliver, agent: Callable[..., Any], store: Store
) -> None:
    anna_asks(deliver)
    reply(agent, 1)
    ours = last_reply(store).message_id
    deliver(
        make_message(
            "home-1@home.example", sender="Anna <anna.home@home.example>",
            subject="Re: Cannot log in [#1]", in_reply_to=f"<{ours}>",
        )
    )  # fmt: skip
    assert ticket_of(store, "home-1@home.example").number == 1
    assert roles(store, 1)["anna.home@home.example"] == "seen"  # mailed once an agent says so
    reply(agent, 1)
    assert last_reply(store).recipients == [ANNA]


def test_our_sent_mail_is_ours_when_imported_as_such(
    agent: Callable[..., Any], store: Store, tmp_path: Any
) -> None:
    (tmp_path / "a1.eml").write_bytes(make_message("a1@cust.example", sender=f"Anna <{ANNA}>"))
    ours = make_message(
        "sup-1@example.com", sender=f"Example Support <{SUPPORT}>", to=ANNA,
        subject="Re: Cannot log in", in_reply_to="<a1@cust.example>",
    )  # fmt: skip
    (tmp_path / "sup-1.eml").write_bytes(ours)
    plain = agent("import", str(tmp_path / "a1.eml"), str(tmp_path / "sup-1.eml"))
    assert "1 messages from our own address were filed as a stranger's" in plain.stderr
    assert ticket_of(store, "sup-1@example.com").number == 2

    (tmp_path / "sup-2.eml").write_bytes(ours.replace(b"sup-1@", b"sup-2@"))
    sent = agent("import", "--sent", str(tmp_path / "sup-2.eml"))
    assert sent.exit_code == 0 and "stranger" not in sent.stderr
    assert ticket_of(store, "sup-2@example.com").number == 1
    with store.read() as session:
        row = session.exec(select(Message).where(Message.message_id == "sup-2@example.com")).one()
    assert row.direction == "out"


def test_the_editor_shows_who_gets_the_reply(
    deliver: Deliver, env_for_cli: dict[str, str], store: Store, tmp_path: Any
) -> None:
    anna_asks(deliver, cc="Boss <boss@cust.example>")
    deliver(
        make_message(
            "a2@cust.example", sender=f"Anna <{ANNA}>", cc=EVE,
            subject="Re: Cannot log in", in_reply_to="<a1@cust.example>",
        )
    )  # fmt: skip
    draft = tmp_path / "draft.txt"
    # An "editor" that keeps a copy of the draft it was shown and writes the answer on top.
    editor = (
        f'sh -c \'cp "$1" {draft}; printf "Done.\\n" | cat - "$1" > "$1.x"; mv "$1.x" "$1"\' sh'
    )
    env = {**env_for_cli, "MAILSUPPORT_AGENT": "maria", "EDITOR": editor, "VISUAL": ""}
    result = cli(env, "reply", "1")
    assert result.exit_code == 0, result.output
    shown = draft.read_text()
    assert f"# Reply to Anna <{ANNA}>\n# Reply cc Boss <boss@cust.example>\n" in shown
    assert f"# Reply not mailed: {EVE}" in shown
    assert last_reply(store).recipients == [ANNA, "boss@cust.example"]
