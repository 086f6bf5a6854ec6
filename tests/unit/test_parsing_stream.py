"""Large messages parsed with base64 and quoted-printable parts decoded as they stream by
(parsing/streaming.py): exactly what the standard parse reads, in a fraction of the memory.

Each comparison parses the same bytes twice, once the standard way and once streamed (the
size threshold lowered to nothing), with feed slices and decoding chunks small enough that
line breaks, base64 groups, pads and soft line breaks fall across their edges.
"""

from __future__ import annotations

import base64
import binascii
import os
import quopri
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailsupport.mail import Inbound
from mailsupport.parsing import message as message_module
from mailsupport.parsing import mimetree, parse, streaming
from mailsupport.parsing.headers import b64decode
from tests.support.paths import MAIL


@contextmanager
def tuned(
    stream_from: int, feed_slice: int | None = None, chunk: int | None = None
) -> Iterator[None]:
    """The size threshold, the parser's feed slice and the decoders' chunk, for a while."""
    saved = (message_module.STREAM_FROM, mimetree._FEED_SLICE, streaming._CHUNK)
    message_module.STREAM_FROM = stream_from
    mimetree._FEED_SLICE = feed_slice or saved[1]
    streaming._CHUNK = chunk or saved[2]
    try:
        yield
    finally:
        message_module.STREAM_FROM, mimetree._FEED_SLICE, streaming._CHUNK = saved


def standard(raw: bytes) -> Inbound:
    with tuned(1 << 62):
        return parse(raw)


def streamed(raw: bytes, feed_slice: int | None = None, chunk: int | None = None) -> Inbound:
    with tuned(0, feed_slice, chunk):
        return parse(raw)


def assert_same(raw: bytes, feed_slice: int | None = None, chunk: int | None = None) -> Inbound:
    expected = standard(raw)
    got = streamed(raw, feed_slice, chunk)
    assert got.defects == expected.defects
    assert [(a.filename, a.content_type, a.inline) for a in got.attachments] == [
        (a.filename, a.content_type, a.inline) for a in expected.attachments
    ]
    assert [a.data for a in got.attachments] == [a.data for a in expected.attachments]
    assert (got.text, got.html) == (expected.text, expected.html)
    assert got == expected  # and everything else
    return got


# -- real-shaped messages ---------------------------------------------------------------------

PDF = bytes(range(256)) * 40 + b"%%EOF"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(reversed(range(256))) * 30


def b64(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"".join(text[i : i + width] + b"\n" for i in range(0, len(text), width))


HEAD = (
    b"From: =?koi8-r?B?7sHUwczY0Q==?= <natalia@example.ru>\n"
    b"To: support@example.com\n"
    b"Subject: =?utf-8?B?0J/RgNC+0LHQu9C10LzQsCDRgSDQvtC/0LvQsNGC0L7QuQ==?=\n"
    b"Date: Tue, 12 Mar 2024 10:00:00 +0300\n"
    b"Message-ID: <big.1@example.ru>\n"
    b"MIME-Version: 1.0\n"
)

NESTED = (
    HEAD + b'Content-Type: multipart/mixed; boundary="outer"\n\n'
    b"This is a multi-part message in MIME format.\n"
    b"--outer\n"
    b'Content-Type: multipart/alternative; boundary="alt"\n\n'
    b"--alt\n"
    b"Content-Type: text/plain; charset=koi8-r\n"
    b"Content-Transfer-Encoding: quoted-printable\n\n"
    + quopri.encodestring("Здравствуйте!\nСчёт во вложении, оплата не проходит.\n".encode("koi8-r"))
    + b"--alt\n"
    b"Content-Type: text/html; charset=windows-1251\n"
    b"Content-Transfer-Encoding: base64\n\n"
    + b64("<p>Здравствуйте!</p><p>Счёт во вложении.</p>".encode("cp1251"))
    + b"--alt--\n"
    b"--outer\n"
    b'Content-Type: multipart/related; boundary="rel"\n\n'
    b"--rel\n"
    b"Content-Type: image/png\nContent-ID: <logo@example.ru>\n"
    b"Content-Transfer-Encoding: base64\n\n" + b64(PNG) + b"--rel--\n"
    b"--outer\n"
    b"Content-Type: application/pdf\n"
    b"Content-Disposition: attachment; filename*=utf-8''%D0%A1%D1%87%D1%91%D1%82.pdf\n"
    b"Content-Transfer-Encoding: base64\n\n" + b64(PDF, 72) + b"--outer--\n"
    b"epilogue\n"
)

SINGLE_BASE64_TEXT = (
    HEAD
    + b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
    + b64(("Добрый день. " * 200).encode("utf-8"))
)

FORWARDED = (
    HEAD + b"Content-Type: multipart/mixed; boundary=b1\n\n"
    b"--b1\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n"
    + "Voilà le message transféré.\n".encode("latin-1")
    + b"--b1\nContent-Type: message/rfc822\n\n"
    b"From: x@example.org\nSubject: inner\nMessage-ID: <in@example.org>\n"
    b"Content-Type: multipart/mixed; boundary=b2\n\n"
    b"--b2\nContent-Type: text/plain\n\ninner text\n"
    b"--b2\nContent-Type: application/octet-stream; name=in.bin\n"
    b"Content-Transfer-Encoding: base64\n\n" + b64(PDF) + b"--b2--\n"
    b"--b1\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
    + b64(b"From: y@example.org\r\nSubject: encoded\r\n\r\nhello\r\n")
    + b"--b1--\n"
)


def attachment_mail(body: bytes, encoding: bytes = b"base64", close: bool = True) -> bytes:
    raw = (
        HEAD + b"Content-Type: multipart/mixed; boundary=zz\n\n"
        b"--zz\nContent-Type: text/plain\n\nSee the attachment.\n"
        b"--zz\nContent-Type: application/octet-stream; name=data.bin\n"
        b"Content-Transfer-Encoding: " + encoding + b"\n\n" + body
    )
    return raw + b"--zz--\n" if close else raw


LINES = b64(PDF)
BROKEN = {
    "missing final boundary": attachment_mail(LINES, close=False),
    "missing final boundary, no last line break": attachment_mail(LINES.rstrip(), close=False),
    "bad padding": attachment_mail(LINES[:-3] + b"\n"),
    "a lone last character": attachment_mail(LINES + b"Q\n"),
    "too much padding": attachment_mail(LINES.rstrip() + b"====\n"),
    "padded every line": attachment_mail(b"".join(b64(PDF[i : i + 40]) for i in range(0, 800, 40))),
    "data after the pad": attachment_mail(b64(b"ab") + LINES),
    "garbage in base64": attachment_mail(LINES[:500] + b"!! \xff\xfe garbage *\n" + LINES[500:]),
    "8-bit bytes in base64": attachment_mail(LINES.replace(b"A", b"\xe9", 3)),
    "boundary inside the base64": attachment_mail(LINES[:400] + b"--zz\n" + LINES[400:]),
    "boundary inside text": (
        HEAD + b"Content-Type: multipart/mixed; boundary=zz\n\n"
        b"--zz\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + b64(b"first half\n")
        + b"--zz\n"
        + b64(b"second half\n")
        + b"--zz--\n"
    ),
    "empty base64 part": attachment_mail(b""),
    "only whitespace": attachment_mail(b"   \n\t\n\n"),
    "no blank line after the headers": attachment_mail(b"").replace(
        b"base64\n\n", b"base64\n" + LINES
    ),
    "unusual spelling of base64": attachment_mail(LINES, b' "BASE64" ; x=1'),
    "two transfer encodings": attachment_mail(LINES, b"base64\nContent-Transfer-Encoding: 7bit"),
    "quoted-printable soft breaks": attachment_mail(
        quopri.encodestring(PDF) + b"tail=\n", b"quoted-printable"
    ),
    "quoted-printable with bare CRs": attachment_mail(
        b"ab=\rcd=\ref\ngh=\r\nij=41=\n=4", b"quoted-printable"
    ),
    "quoted-printable broken escapes": attachment_mail(
        b"=ZZ= \n=4\n==41=\n=\n" * 50, b"quoted-printable"
    ),
    "delivery status with an encoding": (
        HEAD + b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
        b"--r\nContent-Type: text/plain\n\nDelivery failed.\n"
        b"--r\nContent-Type: message/delivery-status\n\n"
        b"Reporting-MTA: dns; mx.example.org\nContent-Transfer-Encoding: base64\n\n"
        b"Final-Recipient: rfc822; a@example.org\nStatus: 5.1.1\n"
        b"--r--\n"
    ),
    "digest": (
        HEAD + b"Content-Type: multipart/digest; boundary=d\n\n"
        b"--d\n\nFrom: a@example.org\nSubject: one\nContent-Transfer-Encoding: base64\n\n"
        + b64(b"one\n")
        + b"--d--\n"
    ),
    "multipart claimed with a base64 encoding": (
        HEAD + b"Content-Type: multipart/mixed; boundary=m\nContent-Transfer-Encoding: base64\n\n"
        b"--m\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        + b64(b"inside\n")
        + b"--m--\n"
    ),
    "multipart without a boundary": (
        HEAD + b"Content-Type: multipart/mixed\nContent-Transfer-Encoding: base64\n\n" + LINES
    ),
}
MESSAGES = {
    "nested": NESTED,
    "single base64 text": SINGLE_BASE64_TEXT,
    "forwarded": FORWARDED,
    **BROKEN,
}


@pytest.mark.parametrize("end", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("name", list(MESSAGES))
def test_streamed_parse_reads_what_the_standard_parse_reads(name: str, end: bytes) -> None:
    raw = MESSAGES[name]
    if end == b"\r\n" and "bare CRs" not in name:
        raw = raw.replace(b"\n", b"\r\n")
    for feed_slice, chunk in [(None, None), (7, 5), (64, 100), (1000, 1)]:
        assert_same(raw, feed_slice, chunk)


def test_the_comparison_sees_the_content_and_the_damage() -> None:
    # What the cases above rely on: the content is real, and damage is reported.
    nested = assert_same(NESTED, 7, 5)
    assert nested.text.startswith("Здравствуйте!")
    assert [a.data for a in nested.attachments] == [PNG, PDF]
    assert nested.attachments[1].filename == "Счёт.pdf"
    assert streamed(SINGLE_BASE64_TEXT, 13, 3).text.startswith("Добрый день.")
    forwarded = streamed(FORWARDED, 7, 5)
    assert b64(PDF) in forwarded.attachments[0].data  # the nested message kept as it came
    assert forwarded.attachments[1].data.endswith(b"hello\r\n")
    garbage = streamed(BROKEN["garbage in base64"], 64, 100)
    assert any("damaged base64" in d for d in garbage.defects)
    assert any(
        "closing MIME boundary" in d for d in streamed(BROKEN["missing final boundary"]).defects
    )
    assert (
        streamed(BROKEN["quoted-printable soft breaks"], 9, 7).attachments[0].data == PDF + b"tail"
    )


@pytest.mark.parametrize("path", sorted(MAIL.rglob("*.eml")), ids=lambda p: p.name)
def test_every_fixture_streamed_reads_the_same(path: Path) -> None:
    raw = path.read_bytes()
    assert_same(raw)
    assert_same(raw, 11, 3)


# -- random mail and random damage --------------------------------------------------------------


@st.composite
def leaf(draw: st.DrawFn, end: bytes) -> bytes:
    """One leaf part: its headers and body, base64 or quoted-printable, maybe damaged."""
    data = draw(st.binary(max_size=600))
    encoding = draw(st.sampled_from([b"base64", b"quoted-printable", b"7bit"]))
    if encoding == b"base64":
        width = draw(st.sampled_from([4, 60, 76, 1000]))
        body = b64(data, width)
    elif encoding == b"quoted-printable":
        body = quopri.encodestring(data)
    else:
        body = data.replace(b"\r", b"").replace(b"\n", b" ") + b"\n"
    for _ in range(draw(st.integers(0, 3))):  # damage: a few bytes in, out, or changed
        where = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from([b"=", b"==", b"!", b"\xff", b" ", b"\r", b"=\r", b"Q", b""]))
        cut = draw(st.integers(0, 2))
        body = body[:where] + junk + body[where + cut :]
    ctype = draw(st.sampled_from([b"application/octet-stream", b"text/plain; charset=utf-8"]))
    return (
        b"Content-Type: " + ctype + b"\nContent-Transfer-Encoding: " + encoding + b"\n\n" + body
    ).replace(b"\n", end)


@st.composite
def random_mail(draw: st.DrawFn) -> bytes:
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    parts = draw(st.lists(leaf(end), min_size=1, max_size=4))
    head = HEAD.replace(b"\n", end)
    if len(parts) == 1 and draw(st.booleans()):
        return head + parts[0]
    raw = head + b"Content-Type: multipart/mixed; boundary=qq" + end + end
    for part in parts:
        raw += b"--qq" + end + part + (b"" if part.endswith(end) else end)
    if draw(st.booleans()):
        raw += b"--qq--" + end
    return raw


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_mail(), st.integers(1, 300), st.integers(1, 200))
def test_random_mail_streamed_reads_the_same(raw: bytes, feed_slice: int, chunk: int) -> None:
    assert_same(raw, feed_slice, chunk)


def decode_in_lines(decoder: streaming.PartDecoder, text: bytes, chunk: int) -> tuple[bytes, bool]:
    """Hand `text` to the decoder as the parser does: line by line (line breaks kept, 8-bit
    bytes as surrogates), all but the last, which finishes it as bytes."""
    lines = [line.decode("ascii", "surrogateescape") for line in text.splitlines(keepends=True)]
    with tuned(0, chunk=chunk):
        for line in lines[:-1]:
            decoder.add(line)
        return decoder.finish(lines[-1].encode("utf-8", "surrogateescape") if lines else b"")


def pieces(*choices: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(choices), max_size=60).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(
    pieces(b"QUJD", b"QQ", b"Q", b"=", b"==", b"\n", b"\r\n", b" ", b"!", b"\xe9", b"+/"),
    st.integers(1, 40),
)
def test_the_base64_decoder_is_b64decode_of_the_whole(text: bytes, chunk: int) -> None:
    assert decode_in_lines(streaming.Base64Decoder(), text, chunk) == b64decode(text)


@settings(max_examples=500, deadline=None)
@given(
    pieces(b"ab", b"=", b"=4", b"=41", b"=\n", b"=\r\n", b"=\r", b"\r", b"\n", b" ", b"\xe9"),
    st.integers(1, 40),
)
def test_the_quoted_printable_decoder_is_a2b_qp_of_the_whole(text: bytes, chunk: int) -> None:
    expected = (binascii.a2b_qp(text), False)
    assert decode_in_lines(streaming.QuotedPrintableDecoder(), text, chunk) == expected


# -- memory -------------------------------------------------------------------------------------


def test_a_large_attachment_is_held_once_decoded() -> None:
    payload = os.urandom(6 * 1024 * 1024)
    raw = attachment_mail(base64.encodebytes(payload)).replace(b"\n", b"\r\n")
    assert len(raw) >= message_module.STREAM_FROM  # parse() streams it on its own
    tracemalloc.start()
    try:
        parsed = parse(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert parsed.attachments[0].data == payload
    # The standard parse peaks at 5 times the payload (lines, their join, its bytes, the
    # decoded bytes); streamed, the decoded bytes and a few slices and chunks.
    assert peak < 2.5 * len(payload), f"{peak / len(payload):.2f} times the attachment"
