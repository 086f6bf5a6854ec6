"""A ticket's topic terms (mailsupport/topicterms.py): what intake stores for the report."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailsupport.config import load_settings
from mailsupport.parsing import parse
from mailsupport.parsing.workers import with_stems
from mailsupport.threads import NO_SUBJECT, normalize_subject
from mailsupport.topicterms import (
    TEXT_CHARS,
    VERSION,
    clean_text,
    dated,
    encode,
    found_at,
    terms_of,
    text_terms,
    ticket_terms,
)
from tests.support.paths import ROOT

FIXTURES = sorted((ROOT / "tests" / "fixtures" / "mail").rglob("*.eml"))
AT = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_the_terms_are_those_of_subject_and_text_joined_by_a_line(path) -> None:  # type: ignore[no-untyped-def]
    """Subject and text apart (the text's by the parse worker) give what both joined give:
    on every real-shaped fixture, in any charset."""
    message = with_stems(parse(path.read_bytes()))
    assert message.text_terms == text_terms(message.text)
    given = copy.deepcopy(message.text_terms)
    joined = terms_of(f"{message.subject}\n{clean_text(message.text[:TEXT_CHARS])}")
    assert ticket_terms(message.subject, message.text, AT) == encode(joined, AT)
    assert ticket_terms(message.subject, message.text, AT, message.text_terms) == encode(joined, AT)
    assert message.text_terms == given  # the worker's terms are not changed by their use


def test_a_subject_and_a_text_sharing_words() -> None:
    stored = ticket_terms("Счёт не пришёл", "Счета не приходят с марта.\n\n> старый счёт", AT)
    head, keys, forms = stored.split("\n")
    assert head == f"{VERSION} 2026-03-02T09:30:00+00:00"
    assert keys.split()[:2] == ["счет", "пришел"]  # the subject's first
    first = forms.split("\x1f")[0].split("\x1e")
    assert first == ["счёт", "счета"]  # both written forms, the subject's first; no quote


def test_forms_are_stored_with_their_whitespace_folded_and_no_nul() -> None:
    stored = encode({("printer",): ["printer"], ("jam", "printer"): ["printer\t \x1f\0 jam"]}, AT)
    assert stored.split("\n")[1:] == ["printer jam+printer", "printer\x1fprinter jam"]


def test_found_at_reads_the_time_back() -> None:
    moscow = timezone(timedelta(hours=3))
    assert found_at(ticket_terms("Принтер", "", AT.astimezone(moscow))) == AT
    assert found_at(None) is None and found_at("") is None
    assert found_at("t1 not-a-time\n\n") is None


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_the_workers_terms_of_a_new_ticket_are_those_the_poll_would_work_out(path) -> None:  # type: ignore[no-untyped-def]
    """The parse worker's terms for the title a default desk gives the message's ticket are
    the ticket's stored terms but their first line, which says when."""
    message = with_stems(parse(path.read_bytes()))
    assert message.title_terms is not None
    title, body = message.title_terms
    assert title == (normalize_subject(message.subject, load_settings().tag_pattern) or NO_SUBJECT)
    assert dated(body, AT) == ticket_terms(title, message.text, AT)
