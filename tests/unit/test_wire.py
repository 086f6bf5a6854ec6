"""Our directly written mail (mailsupport/wire.py) against what it must say.

Generated drafts (Russian and odd characters in names and subjects, long lines, long
reference chains) are written and parsed back with the standard library: they must give
back exactly the headers and bodies that went in, in 7-bit lines of legal length ending in
CRLF.
"""

from __future__ import annotations

import re
from email import headerregistry
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import compat32, default
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsupport import wire
from mailsupport.compose import Draft, clean_header

RUSSIAN = "Здравствуйте реквизиты для оплаты счёт договор поставки ООО «Ромашка» № ёЁ"
# Letters of the languages our customers write in, and the characters headers treat
# specially: quotes, commas, angle brackets, "=?" that looks like an encoded word.
LATIN = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789äöüßéçñ中文 "
SPECIALS = "\"',;:<>@()\\=?_."
PIECES = st.sampled_from([*RUSSIAN, *LATIN, *SPECIALS, "=?", "?="])
words = st.lists(PIECES, max_size=40).map(lambda p: clean_header("".join(p)))
phrases = st.lists(words, min_size=0, max_size=12).map(lambda w: clean_header(" ".join(w)))
local_parts = st.from_regex(r"[a-z][a-z0-9_+-]{0,12}(\.[a-z0-9_+-]{1,8})?", fullmatch=True)
domains = st.from_regex(r"[a-z][a-z0-9-]{0,15}\.(ru|com|example\.org)", fullmatch=True)
message_ids = st.builds(
    lambda a, b: f"{a}@{b}", st.from_regex(r"[A-Za-z0-9.$%_-]{1,60}", fullmatch=True), domains
)
# Bodies: lines of any length (quoted-printable and base64 must wrap them), Russian and
# ASCII, trailing spaces and "=" that quoted-printable must escape, "From " and "." lines.
body_lines = st.one_of(
    st.lists(PIECES | st.sampled_from(["\t", "=", "  "]), max_size=200).map("".join),
    st.sampled_from(["From here on", ".", "..", "> quoted", "", "=3D", "-- ", "x" * 120]),
)
bodies = st.lists(body_lines, max_size=30).map("\n".join)


@st.composite
def mailboxes(draw: st.DrawFn) -> headerregistry.Address:
    name = draw(phrases)[:200]
    return headerregistry.Address(
        display_name=name, addr_spec=f"{draw(local_parts)}@{draw(domains)}"
    )


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    return Draft(
        from_=draw(mailboxes()),
        to=tuple(draw(st.lists(mailboxes(), min_size=1, max_size=4))),
        cc=tuple(draw(st.lists(mailboxes(), max_size=3))),
        subject=draw(phrases)[:220],
        date="Tue, 03 Mar 2026 10:00:00 +0000",
        message_id=draw(message_ids),
        in_reply_to=draw(st.none() | message_ids),
        references=tuple(draw(st.lists(message_ids, max_size=25))),
        extra=draw(st.sampled_from([(), (("Auto-Submitted", "auto-replied"),)])),
        text=draw(bodies),
        html=draw(st.none() | bodies.map(lambda b: f"<p>{b}</p>")),
    )


def _parse(data: bytes) -> EmailMessage:
    parsed = BytesParser(policy=default).parsebytes(data)
    assert isinstance(parsed, EmailMessage)
    assert not parsed.defects, parsed.defects
    return parsed


def _lines_are_legal(data: bytes) -> None:
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in data.replace(b"\r\n", b"")  # no bare CR
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in data.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
    for line in head.split(b"\r\n"):
        assert re.match(rb"[A-Za-z-]+: |[ \t]", line), line  # a header or a continuation


def _as_text(body: str) -> str:
    """A body as a reader gets it back: lines joined by \\n, ending in one."""
    return b"\n".join(body.encode("utf-8").splitlines()).decode("utf-8") + "\n"


def _lf(content: str) -> str:
    # A 7bit body parsed from CRLF bytes keeps its CRLFs; encoded ones decode to what was
    # encoded (LF). Readers treat both alike.
    return content.replace("\r\n", "\n")


def _says(data: bytes, draft: Draft) -> None:
    """The bytes say exactly what the draft does."""
    parsed = _parse(data)
    raw = BytesParser(policy=compat32).parsebytes(data)  # the headers as written

    def people(name: str) -> list[tuple[str, str]]:
        # Names are decoded as RFC 2047 says; the email package's new parser puts a space
        # between two encoded words of a display name where the RFC says there is none.
        values = [v.replace("\r\n", "") for v in raw.get_all(name, [])]
        return [(_decoded(n), a) for n, a in getaddresses(values)]

    def expected(boxes: tuple[headerregistry.Address, ...]) -> list[tuple[str, str]]:
        return [(a.display_name, a.addr_spec) for a in boxes]

    assert people("From") == expected((draft.from_,))
    assert people("To") == expected(draft.to)
    assert people("Cc") == expected(draft.cc)
    assert str(parsed["Subject"]) == draft.subject
    assert _decoded(raw["Subject"].replace("\r\n", "")) == draft.subject
    assert str(parsed["Date"]) == draft.date
    assert str(parsed["Message-ID"]) == f"<{draft.message_id}>"
    if draft.in_reply_to:
        assert str(parsed["In-Reply-To"]) == f"<{draft.in_reply_to}>"
    else:
        assert "In-Reply-To" not in parsed
    assert str(parsed.get("References", "")).split() == [f"<{i}>" for i in draft.references]
    for name, value in draft.extra:
        assert str(parsed[name]) == value
    assert str(parsed.get("X-Loop", "")) == (draft.from_.addr_spec if draft.extra else "")
    text = parsed.get_body(("plain",))
    assert text is not None and _lf(text.get_content()) == _as_text(draft.text)
    assert text.get_content_charset() == "utf-8"
    html = parsed.get_body(("html",))
    if draft.html is None:
        assert html is None and not parsed.is_multipart()
    else:
        assert html is not None and _lf(html.get_content()) == _as_text(draft.html)
        assert parsed.get_content_type() == "multipart/alternative"


def _decoded(value: str) -> str:
    return str(make_header(decode_header(value)))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drafts())
def test_written_mail_says_exactly_what_the_draft_says(draft: Draft) -> None:
    data = draft.wire_bytes()
    _lines_are_legal(data)
    _says(data, draft)


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Запрос реквизитов для оплаты счёта по договору поставки № 17 [#52]",
        # The email package's writer folds this one as "ЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗ З ЗЗ З": a space
        # it puts between two encoded words vanishes when they are decoded.
        "ЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗЗ З З З З",
    ],
)
def test_russian_subjects_keep_every_space(subject: str) -> None:
    data = wire.header("Subject", subject)
    assert data.startswith("Subject: =?utf-8?")
    assert _decoded(data.removeprefix("Subject: ").replace("\r\n", "")) == subject
    assert str(_parse((data + "\r\n").encode("ascii"))["Subject"]) == subject


def test_ascii_mail_stays_readable() -> None:
    draft = Draft(
        from_=headerregistry.Address("Example Support", addr_spec="support@example.com"),
        to=(headerregistry.Address('Smith, "Jo"', addr_spec="jo@example.org"),),
        cc=(),
        subject="Re: Invoice [#7]",
        date="Tue, 03 Mar 2026 10:00:00 +0000",
        message_id="a.b@example.com",
        in_reply_to="x@example.org",
        references=("x@example.org",),
        extra=(),
        text="Hello,\nthanks.\n",
        html=None,
    )
    data = draft.wire_bytes()
    assert b"Subject: Re: Invoice [#7]\r\n" in data
    assert b'To: "Smith, \\"Jo\\"" <jo@example.org>\r\n' in data
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nHello,\r\nthanks.\r\n" in data


def test_long_reference_chains_fold_between_ids_never_inside() -> None:
    ids = [f"{'x' * 50}.{n}@example.org" for n in range(21)]
    folded = wire.id_header("References", ids)
    lines = folded.removesuffix("\r\n").split("\r\n")
    assert len(lines) == 21  # two of these IDs never fit on one line
    assert [line.strip() for line in lines] == [f"References: <{ids[0]}>"] + [
        f"<{i}>" for i in ids[1:]
    ]


def test_body_encoding_is_the_shorter_one() -> None:
    mostly_latin = "Invoice " * 30 + "ä\n"
    cte, body = wire._body(mostly_latin)
    assert cte == "quoted-printable" and b"=C3=A4" in body
    cte, _ = wire._body(RUSSIAN * 5)
    assert cte == "base64"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(PIECES | st.sampled_from(["😀", "\t", "_", "=", "é"]), min_size=1, max_size=120).map(
        "".join
    ),
    st.sampled_from(["Subject", "X-A-Rather-Long-Header-Name-Here", "Thread-Topic"]),
)
def test_encoded_words_are_legal_and_decode_to_the_text(text: str, name: str) -> None:
    """RFC 2047: words of at most 75 characters, each of whole characters (every word decodes
    alone), lines within 78 characters; the words together give back the text."""
    written = wire.header(name, text) if wire._needs_encoding(text) else None
    if written is None:
        return
    lines = written.removesuffix("\r\n").split("\r\n")
    assert all(len(line) <= wire.MAX_LINE for line in lines), lines
    words = re.findall(r"=\?utf-8\?[bq]\?[^?]*\?=", written)
    assert " ".join(line.strip() for line in lines).removeprefix(f"{name}: ") == " ".join(words)
    for word in words:
        assert len(word) <= 75
        _decoded(word)  # raises if a word cuts a character in two
    assert _decoded(" ".join(words)) == text
