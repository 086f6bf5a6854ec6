"""Reading an agent's mail: their words above the quote, their #commands, and messages
forwarded inline the ways Gmail, Thunderbird, Outlook and Apple Mail (and Russian clients)
write them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsupport.agentwords import (
    own_words,
    read_inline_forward,
    read_instructions,
    strip_forward_prefix,
)
from mailsupport.team import NotifyMode, parse_notify, registered_name

GMAIL_REPLY = """\
Try the other tray.

--\x20
Anna Agent
Tier 1

On Sat, Dec 5, 2026 at 10:00 AM Example Support <support@example.com> wrote:
> New ticket: #1 Printer
> Customer: Olga <olga@customer.example.org>
"""

OUTLOOK_REPLY = """\
#close
Fixed by the update.

________________________________
From: Example Support <support@example.com>
Sent: Saturday, December 5, 2026 10:00 AM
To: Anna Agent <anna@agents.example>
Subject: [#1] New ticket: Printer

New ticket: #1 Printer
"""


def test_own_words_leave_out_the_signature_and_the_quote() -> None:
    assert own_words(GMAIL_REPLY) == ["Try the other tray."]
    assert own_words(OUTLOOK_REPLY) == ["#close", "Fixed by the update."]


def test_commands_come_out_of_the_text() -> None:
    orders = read_instructions(own_words(OUTLOOK_REPLY))
    assert orders.close and not orders.note and orders.text == "Fixed by the update."
    orders = read_instructions(["#note", "Toner is low.", "#assign boris", "#pending"])
    assert orders.note and orders.pending and orders.assign == "boris"
    assert orders.text == "Toner is low."


def test_note_counts_only_on_the_first_line_and_commands_only_on_lines_of_their_own() -> None:
    orders = read_instructions(["Hello,", "#note", "#close the window first"])
    assert not orders.note and not orders.close
    assert orders.text == "Hello,\n#note\n#close the window first"
    assert read_instructions(["#assign two names"]).assign is None


@pytest.mark.parametrize(
    ("text", "date"),
    [
        (  # Gmail
            "Please look.\n\n---------- Forwarded message ---------\n"
            "From: Boris Ivanov <boris@client.example>\nDate: Mon, Nov 30, 2026 at 9:15 AM\n"
            "Subject: Invoice 42\nTo: Anna <anna@agents.example>\n\nCharged twice.\n",
            datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        ),
        (  # Thunderbird
            "Please look.\n\n-------- Forwarded Message --------\nSubject: \tInvoice 42\n"
            "Date: \tMon, 30 Nov 2026 12:15:00 +0300\n"
            "From: \tBoris Ivanov <boris@client.example>\nTo: \tanna@agents.example\n\n"
            "Charged twice.\n",
            datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        ),
        (  # Outlook
            "Please look.\n\n________________________________\n"
            "From: Boris Ivanov [mailto:boris@client.example]\n"
            "Sent: Monday, November 30, 2026 9:15 AM\nTo: Anna\nSubject: Invoice 42\n\n"
            "Charged twice.\n",
            datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        ),
        (  # Apple Mail
            "Please look.\n\nBegin forwarded message:\n\n"
            "From: Boris Ivanov <boris@client.example>\nSubject: Invoice 42\n"
            "Date: 30 November 2026 at 09:15:00 GMT\nTo: Anna <anna@agents.example>\n\n"
            "Charged twice.\n",
            datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        ),
        (  # a Russian client
            "Please look.\n\n-------- Пересылаемое сообщение --------\n"
            "От: Boris Ivanov <boris@client.example>\nДата: 30.11.2026 09:15\n"
            "Тема: Invoice 42\nКому: anna@agents.example\n\nCharged twice.\n",
            datetime(2026, 11, 30, 9, 15, tzinfo=UTC),
        ),
    ],
)
def test_inline_forwards_name_their_sender_date_subject_and_text(
    text: str, date: datetime | None
) -> None:
    found = read_inline_forward(text, "Fwd: Invoice 42")
    assert found is not None
    assert (found.sender.name, found.sender.address) == ("Boris Ivanov", "boris@client.example")
    assert found.subject == "Invoice 42"
    assert found.text == "Charged twice."
    assert found.date == date
    assert found.above == ["Please look."]


def test_a_reply_with_quoted_history_is_no_forward() -> None:
    assert read_inline_forward(GMAIL_REPLY, "Re: [#1] New ticket: Printer") is None
    # Outlook's bare header block is history in a reply, a forward only under Fw:.
    bare = "See below.\n\nFrom: Boris <boris@client.example>\nSent: Monday\nSubject: X\n\nHi\n"
    assert read_inline_forward(bare, "Re: X") is None
    assert read_inline_forward(bare, "FW: X") is not None


def test_forward_prefixes_of_several_languages_are_stripped() -> None:
    assert strip_forward_prefix("Fwd: FW: WG: Пересл: Invoice") == "Invoice"
    assert strip_forward_prefix("Fwd[2]: Invoice") == "Invoice"


def test_notification_modes() -> None:
    assert parse_notify(" Instant ") == NotifyMode("instant")
    assert str(parse_notify("digest")) == "digest:30m"
    assert str(parse_notify("digest:2h")) == "digest:2h"
    assert str(parse_notify("digest:90")) == "digest:90m"
    for bad in ("sometimes", "digest:0m", "digest:30s", "digest:9d"):
        with pytest.raises(ValueError, match=r"digest|notification mode"):
            parse_notify(bad)


def test_registered_names() -> None:
    from mailsupport.errors import UsageError

    assert registered_name("whoever", []) == "whoever"  # no registry: anyone
    assert registered_name("ANNA", ["anna", "boris"]) == "anna"
    with pytest.raises(UsageError, match="no agent 'eve' is registered"):
        registered_name("eve", ["anna", "boris"])
