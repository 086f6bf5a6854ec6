"""Which kind of automatic mail opened a ticket (automated.automatic_kind), over the same
fixtures as test_automated_mail.py: every kind is also a reason for no acknowledgement, and
people's mail (a customer forwarding a message included) is no kind at all."""

from __future__ import annotations

from importlib import import_module

import pytest

from mailsupport.ackrules import ack_decision
from mailsupport.automated import AUTOMATIC_KINDS, automatic_kind, complaint_evidence
from mailsupport.parsing import parse
from tests.support.paths import MAIL
from tests.unit.test_automated_mail import EXPECTED, OURS, PEOPLE, context, load, message

# The kind follows the acknowledgement rule that refuses the fixture, as schema 0009 reads
# it for the tickets filed before it (so this also checks the migration's table)...
KIND_OF_RULE = {
    **import_module("mailsupport.store.migrations.versions.0009_automatic_tickets")._KIND_OF_RULE,
    # From our own address without our signature: a stranger, but it also says it is an
    # auto-reply, which is what it is.
    "own-address": "auto-reply",
}
# ...except for abuse and complaint reports, which the report rule refuses too.
FEEDBACK = {"auto/arf_feedback_report.eml", "auto/complaint_provider.eml"}
KINDS = {
    name: "feedback-report" if name in FEEDBACK else KIND_OF_RULE[rule]
    for name, rule in EXPECTED.items()
    if rule is not None
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kind_of_each_fixture(name: str) -> None:
    kind = automatic_kind(load(name), OURS)
    assert kind == KINDS[name]
    assert kind in AUTOMATIC_KINDS


def test_every_kind_is_seen() -> None:
    assert set(KINDS.values()) == set(AUTOMATIC_KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_gets_no_acknowledgement(name: str) -> None:
    assert not ack_decision(load(name), context()).send


@pytest.mark.parametrize("name", PEOPLE)
def test_people_are_no_kind(name: str) -> None:
    assert automatic_kind(load(name), OURS) == ""


def test_a_customer_forwarding_a_message_is_not_a_complaint() -> None:
    # An attached message from an abuse@ address is not enough: it takes a report subject
    # or an automatic sign too.
    m = load("auto/customer_forwarded_message.eml")
    assert complaint_evidence(m) is None
    assert ack_decision(m, context()).send


def test_complaint_needs_an_attached_message() -> None:
    m = message(sender="Complaints <complaints@webmail.example.org>", subject="Complaint")
    assert complaint_evidence(m) is None
    assert automatic_kind(m) == ""


def test_microsoft_jmrp_header_makes_a_complaint() -> None:
    # Microsoft's JMRP sends the complained-about message attached, marked by this header.
    raw = (MAIL / "auto/customer_forwarded_message.eml").read_bytes()
    m = parse(b"X-HmXmrOriginalRecipient: <r.haas@outlook.example.com>\n" + raw)
    assert complaint_evidence(m) == (
        "complaint report (X-HmXmrOriginalRecipient: <r.haas@outlook.example.com>)"
    )
    assert automatic_kind(m) == "feedback-report"


def test_a_person_is_no_kind() -> None:
    assert automatic_kind(message()) == ""
