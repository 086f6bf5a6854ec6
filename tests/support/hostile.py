"""Hostile and broken mail: real-world-shaped messages and hypothesis strategies that damage
them the way broken clients, hostile senders and cut-off transfers do.

A case is a seed message (a fixture from tests/fixtures/mail, or one made by
tests/support/mailfactory.py) given a Message-ID of its own, then a few `Mutation`s applied in
order. Every mutation works on bytes and never fails: where its target is missing (no
boundary, no such header) it changes what it can, or nothing.

A case prints as the Python that makes it again: after `from tests.support.hostile import *`,
paste a failing example and call its `build(message_id)`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.support.mailfactory import make_message
from tests.support.paths import MAIL
from tests.support.rawmail import (
    boundaries,
    fields_named,
    header_fields,
    newline,
    set_message_id,
    split_head,
)


@dataclass(frozen=True)
class Seed:
    name: str
    raw: bytes

    def __repr__(self) -> str:
        return f"SEEDS_BY_NAME[{self.name!r}]"


@dataclass(frozen=True)
class Mutation:
    """One named change to a message's bytes; the name is what hypothesis prints."""

    name: str
    apply: Callable[[bytes], bytes]

    def __repr__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Case:
    seed: Seed
    mutations: tuple[Mutation, ...]

    def build(self, message_id: str) -> bytes:
        raw = set_message_id(self.seed.raw, message_id)
        for mutation in self.mutations:
            raw = mutation.apply(raw)
        return raw


def seeds() -> list[Seed]:
    """Every fixture message, and a few made by the factory (attachments, charsets, threads)."""
    found = [
        Seed(str(path.relative_to(MAIL)), path.read_bytes())
        for path in sorted(MAIL.glob("*.eml")) + sorted(MAIL.glob("auto/*.eml"))
    ]
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
    found += [
        Seed(
            "factory:attachments",
            make_message(
                "seed-a@customer.example.org",
                cc="Boris <boris@customer.example.org>",
                attachments=[
                    ("счёт.pdf", "application/pdf", pdf),
                    ("notes.txt", "text/plain", b"line\n" * 40),
                ],
            ),
        ),
        Seed(
            "factory:koi8r-reply",
            make_message(
                "seed-b@customer.example.org",
                subject="Re: [#1] Ошибка входа",
                body="Здравствуйте, всё ещё не работает.",
                charset="koi8-r",
                in_reply_to="<m1@customer.example.org>",
                references="<m0@customer.example.org> <m1@customer.example.org>",
            ),
        ),
        Seed(
            "factory:cp1251",
            make_message(
                "seed-c@customer.example.org",
                sender="Анна Петрова <anna@customer.example.org>",
                body="Не могу войти в личный кабинет.",
                charset="windows-1251",
            ),
        ),
    ]
    return found


# -- where in the message -------------------------------------------------------------------


def _at(raw: bytes, per_mille: int) -> int:
    return len(raw) * per_mille // 1000


def _pick(spans: list[tuple[int, int]], index: int) -> tuple[int, int] | None:
    return spans[index % len(spans)] if spans else None


# -- values hostile senders put in headers --------------------------------------------------

BOGUS_CHARSETS = [
    "x-bogus", "utf-7", "utf-16", "utf-32", "idna", "punycode", "rot13", "base64", "hex",
    "unicode-escape", "raw-unicode-escape", "zlib", "uu", "undefined", "mbcs", "cp65001",
    "utf-8*ru", "'utf-8'", '"', "", "iso-8859-99", "windows-9999", "koi8-r\x00", "utf\u00ff8",
    "x" * 300, "us-ascii", "unknown-8bit", "iso-2022-jp", "hz", "gb18030", "ebcdic-cp-us",
]  # fmt: skip

ENCODED_WORDS = [
    b"=?utf-8?B?0J/RgNC40LLQtdGC?=", b"=?utf-8?B?0J/RgNC4?= =?utf-8?B?0LLQtdGC?=",
    b"=?utf-8?B?0J/RgNC", b"=?utf-8?B?!!!notbase64!!!?=", b"=?utf-8?Q?=ZZ=D0=9F=?=",
    b"=?x-bogus?Q?hello?=", b"=??Q??=", b"=?utf-8??x?=", b"=?utf-8?X?abc?=", b"=?=?=?=",
    b"=?utf-7?Q?+AGEAYgBj-?=", b"=?idna?Q?xn--80ak6aa92e?=", b"=?rot13?Q?uryyb?=",
    b"=?utf-16?B?2D3eAA==?=", b"=?utf-16?B?AAA?=", b"=?koi8-r?B?8NLJ18XU?=",
    b"=?windows-1251?Q?=CF=F0=E8=E2=E5=F2?=", b"=?utf-8*ru?Q?x?=", b"=?utf-8?q?a_b?==?utf-8?q?c?=",
    b"=?utf-8?B?" + base64.b64encode("\ud800".encode("utf-8", "surrogatepass")) + b"?=",
    b"=?utf-8?Q?\xd0\x9f?=", b"=?\xff\xfe?B?AAAA?=", b"=?utf-8?B?" + b"A" * 5000 + b"?=",
]  # fmt: skip

HOSTILE_VALUES = [
    b"", b" ", b"<>", b"<", b">", b"@", b"<@>", b"\"unclosed <a@example.org>", b"(((((",
    b"a@b@c", b"undisclosed-recipients:;", b"Group: a@example.org, b@example.org;",
    b"\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 <anna@example.org>",  # raw UTF-8
    b"\xcf\xf0\xe8\xe2\xe5\xf2 <anna@example.org>",  # raw windows-1251
    b"\xff\xfe\xfd", b"x\x00y", b"\x1b[31mred\x1b[0m", b"a\rb", b"=?utf-8?B?PGEgaHJlZj0=?=",
    b"[#1] Re: [#99999999999999999999] [#-1] [#0x10]", b"<x@y> <x@y> <" + b"a" * 400 + b"@y>",
    b"Mon, 32 Foo 99999 99:99:99 +9999", b"Tue, 12 Mar 2024 10:00:00 +2400",
]  # fmt: skip

FOLDS = [b"\n ", b"\r\n\t", b"\n\t\t\t", b"\r ", b"\n \n ", b"\n", b"\n\n ", b"\r\n \r\n "]
CONTROL = bytes([*range(0x00, 0x20), 0x7F])
HEADER_NAMES = [
    b"From", b"To", b"Cc", b"Subject", b"Date", b"Message-ID", b"In-Reply-To", b"References",
    b"Content-Type", b"Content-Transfer-Encoding", b"Content-Disposition", b"MIME-Version",
    b"Reply-To", b"Return-Path", b"Auto-Submitted", b"Precedence", b"X-Loop", b"List-Id",
]  # fmt: skip
TRANSFER_ENCODINGS = [
    b"base64", b"quoted-printable", b"8bit", b"7bit", b"binary", b"x-uuencode", b"x-bogus",
    b"BASE64", b" base64 ; x", b"quoted-printable, base64", b"",
]  # fmt: skip


# -- mutations ------------------------------------------------------------------------------
#
# Each mutation is a function of plain values returning a Mutation whose name is the call
# that makes it again: paste a failing example's repr into a test to reproduce it.


def _named(name: str, apply: Callable[[bytes], bytes], *args: object) -> Mutation:
    return Mutation(f"{name}({', '.join(repr(a) for a in args)})", apply)


def duplicate_header(which: int, where: str, value: bytes | None) -> Mutation:
    """Repeat a top-level header (or give the copy another value) before/after it, or at
    the top/bottom of the header block."""

    def apply(raw: bytes) -> bytes:
        head, rest = split_head(raw)
        span = _pick(header_fields(head), which)
        if span is None:
            return raw
        field = head[span[0] : span[1]]
        if value is not None:
            field = field.split(b":", 1)[0] + b": " + value + newline(raw)
        if where == "before":
            head = head[: span[0]] + field + head[span[0] :]
        elif where == "after":
            head = head[: span[1]] + field + head[span[1] :]
        elif where == "top":
            head = field + head
        else:
            head = head + field
        return head + rest

    return _named("duplicate_header", apply, which, where, value)


def weird_fold(which: int, at: int, fold: bytes) -> Mutation:
    """A line break, folded or not, inside a top-level header."""

    def apply(raw: bytes) -> bytes:
        head, rest = split_head(raw)
        span = _pick(header_fields(head), which)
        if span is None:
            return raw
        cut = span[0] + (span[1] - span[0]) * at // 1000
        return head[:cut] + fold + head[cut:] + rest

    return _named("weird_fold", apply, which, at, fold)


def control_bytes(at: int, junk: bytes) -> Mutation:
    """Bytes inserted into the top-level header block (NUL, ESC, CR, DEL...)."""

    def apply(raw: bytes) -> bytes:
        head, rest = split_head(raw)
        cut = _at(head, at)
        return head[:cut] + junk + head[cut:] + rest

    return _named("control_bytes", apply, at, junk)


def add_header(name: bytes, value: bytes) -> Mutation:
    """A header put first: raw 8-bit text, broken encoded words, hostile values."""

    def apply(raw: bytes) -> bytes:
        head, rest = split_head(raw)
        return name + b": " + value + newline(raw) + head + rest

    return _named("add_header", apply, name, value)


def drop_header(name: bytes) -> Mutation:
    def apply(raw: bytes) -> bytes:
        head, rest = split_head(raw)
        for start, end in reversed(fields_named(head, name)):
            head = head[:start] + head[end:]
        return head + rest

    return _named("drop_header", apply, name)


def _long_value(kind: str, size: int) -> bytes:
    if kind == "plain":
        return b"x" * size
    if kind == "words":
        return b"word " * (size // 5)
    if kind == "encoded":
        return b"=?utf-8?q?a?= " * (size // 14)
    if kind == "addresses":
        return b"".join(b"a%d@example.org, " % i for i in range(size // 20))
    if kind == "references":
        return b"<r@example.org> " * (size // 16)
    if kind == "params":
        return b"text/plain" + b"; a=b" * (size // 5)
    if kind == "quoted":
        return b'text/plain; name="' + b";" * size + b'"'
    if kind == "comments":
        return b"(" * (size // 2) + b")" * (size // 2)
    return b"\xd0\x9f" * (size // 2)  # raw 8-bit


LONG_KINDS = {
    "plain": None, "words": None, "encoded": None, "comments": None, "8bit": None,
    "addresses": b"To", "references": b"References", "params": b"Content-Type",
    "quoted": b"Content-Type",
}  # fmt: skip


def long_header(name: bytes, kind: str, size: int, folded: bool) -> Mutation:
    """Megabyte header lines, and long ones just under the parser's limits."""

    def apply(raw: bytes) -> bytes:
        value = _long_value(kind, size)
        if folded:
            value = re.sub(rb"(.{1,76})(?: |(?=.))", rb"\1\n ", value, flags=re.S).rstrip()
        head, rest = split_head(raw)
        return head + name + b": " + value + newline(raw) + rest

    return _named("long_header", apply, name, kind, size, folded)


BOUNDARY_DAMAGE = ["drop_param", "absent", "prefix", "extend", "no_close", "repeat_line",
                   "stray_lines", "quote", "empty", "long", "whitespace"]  # fmt: skip


def boundary_damage(how: str, which: int, at: int) -> Mutation:
    """One of the message's boundaries (nested ones too) damaged; see BOUNDARY_DAMAGE."""

    def apply(raw: bytes) -> bytes:
        found = boundaries(raw)
        if not found:
            return raw
        b = found[which % len(found)]
        other = found[(which + 1) % len(found)]
        nl = newline(raw)
        param = re.compile(rb'(boundary\s*=\s*"?)' + re.escape(b) + rb'("?)', re.I)
        if how == "drop_param":
            return param.sub(b"x-boundary-dropped=1", raw, count=1)
        if how == "absent":
            return param.sub(rb"\g<1>never-seen-boundary\g<2>", raw, count=1)
        if how == "prefix":  # this boundary becomes a prefix of another one
            short = other[: max(1, len(other) // 2)]
            return param.sub(lambda m: m.group(1) + short + m.group(2), raw)
        if how == "extend":  # another boundary becomes a prefix of this one
            return raw.replace(b"--" + b + nl, b"--" + b + b"x" + nl)
        if how == "no_close":
            return raw.replace(b"--" + b + b"--", b"")
        if how == "repeat_line":
            return raw.replace(b"--" + b + nl, (b"--" + b + nl) * 3, 1)
        if how == "stray_lines":
            cut = raw.find(b"\n", _at(raw, at)) + 1
            stray = b"--" + b + nl + b"--" + other + b"--" + nl
            return raw[:cut] + stray + raw[cut:]
        if how == "quote":
            return param.sub(lambda m: b'boundary="' + b + b'"; boundary=' + other + b";", raw)
        if how == "empty":
            return param.sub(b'boundary=""', raw).replace(b"--" + b, b"--")
        if how == "long":
            return raw.replace(b, b + b"z" * 2000)
        return param.sub(lambda m: m.group(1) + b + b" \t" + m.group(2), raw).replace(
            b"--" + b + nl, b"--" + b + b"   \t" + nl
        )

    return _named("boundary_damage", apply, how, which, at)


def charset_damage(charset: bytes, which: int) -> Mutation:
    """One Content-Type (nested ones too) gets this charset instead of its own."""

    def apply(raw: bytes) -> bytes:
        span = _pick(fields_named(raw, b"Content-Type"), which)
        if span is None:
            return raw
        field = raw[span[0] : span[1]].rstrip(b"\r\n")
        field = re.sub(rb";\s*charset\s*=\s*(\"[^\"]*\"|[^;\s]*)", b"", field, flags=re.I)
        return raw[: span[0]] + field + b"; charset=" + charset + newline(raw) + raw[span[1] :]

    return _named("charset_damage", apply, charset, which)


def transfer_encoding_damage(cte: bytes, which: int, at: int, junk: bytes) -> Mutation:
    """A (second) Content-Transfer-Encoding for one part, and junk in its body."""

    def apply(raw: bytes) -> bytes:
        span = _pick(fields_named(raw, b"Content-Type"), which)
        if span is None:
            return raw
        raw = raw[: span[1]] + b"Content-Transfer-Encoding: " + cte + newline(raw) + raw[span[1] :]
        body = raw.find(b"\n\n", span[1])
        if body == -1:
            return raw
        end = raw.find(b"\n--", body + 2)
        end = len(raw) if end == -1 else end
        cut = body + 2 + (end - body - 2) * at // 1000
        return raw[:cut] + junk + raw[cut:]

    return _named("transfer_encoding_damage", apply, cte, which, at, junk)


def nest(depth: int, kind: str, naming: str, closed: bool) -> Mutation:
    """The message wrapped in multiparts or message/rfc822 parts, up to thousands deep."""

    def apply(raw: bytes) -> bytes:
        nl = newline(raw)
        head, _ = split_head(raw)
        ids = b"".join(head[s:e] for s, e in fields_named(head, b"Message-ID"))
        top = ids + b"From: Wrapper <wrapper@example.net>" + nl + b"Subject: nested" + nl
        opening: list[bytes] = []
        closing: list[bytes] = []
        for level in range(depth):
            if kind == "rfc822" or (kind == "alternating" and level % 2):
                opening.append(b"Content-Type: message/rfc822" + nl + nl + b"Subject: level" + nl)
                continue
            name = {
                "distinct": b"=_%d_=" % level,
                "same": b"b",
                "prefix": b"b" * (level % 20 + 1),  # b, bb, bbb...: each a prefix of the next
                "dashes": b"b" + b"-" * (level % 20),  # "--b--" closes b and opens "b--"
            }[naming]
            opening.append(
                b"Content-Type: multipart/mixed; boundary=" + name + nl + nl + b"--" + name + nl
            )
            closing.append(nl + b"--" + name + b"--" + nl if closed else b"")
        return top + b"".join(opening) + raw + b"".join(reversed(closing))

    return _named("nest", apply, depth, kind, naming, closed)


def many_parts(count: int, content_type: bytes) -> Mutation:
    """The message's body as the last of `count` + 1 parts."""

    def apply(raw: bytes) -> bytes:
        nl = newline(raw)
        head, body = split_head(raw)
        head = b"".join(
            head[s:e]
            for s, e in header_fields(head)
            if not head[s:e].lower().startswith((b"content-", b"mime-"))
        )
        part = b"--many" + nl + b"Content-Type: " + content_type + nl + nl + b"part %d" + nl
        parts = b"".join(part % i for i in range(count))
        return (
            head + b"Content-Type: multipart/mixed; boundary=many" + nl + nl + parts
            + b"--many" + nl + b"Content-Type: text/plain" + nl + nl + body + nl + b"--many--" + nl
        )  # fmt: skip

    return _named("many_parts", apply, count, content_type)


def truncate(where: str, at: int) -> Mutation:
    """Cut off anywhere, in the body, or right after the header block."""

    def apply(raw: bytes) -> bytes:
        head, body = split_head(raw)
        if where == "anywhere":
            return raw[: max(1, _at(raw, at))]
        if where == "after_headers":
            return head
        return head + body[: _at(body, at)]

    return _named("truncate", apply, where, at)


def line_endings(how: str) -> Mutation:
    def apply(raw: bytes) -> bytes:
        lf = raw.replace(b"\r\n", b"\n")
        if how == "crlf":
            return lf.replace(b"\n", b"\r\n")
        if how == "cr":
            return lf.replace(b"\n", b"\r")
        if how == "lf":
            return lf
        if how == "double_cr":
            return lf.replace(b"\n", b"\r\r\n")
        lines = lf.split(b"\n")
        return b"".join(line + (b"\r\n" if i % 3 else b"\n") for i, line in enumerate(lines))

    return _named("line_endings", apply, how)


def byte_noise(at: int, length: int, data: bytes) -> Mutation:
    """`length` bytes at `at` per mille replaced by `data`."""

    def apply(raw: bytes) -> bytes:
        cut = _at(raw, at)
        return raw[:cut] + data + raw[cut + length :]

    return _named("byte_noise", apply, at, length, data)


# -- strategies -----------------------------------------------------------------------------

positions = st.integers(0, 1000)  # per mille of the current length
picks = st.integers(0, 63)  # which of several targets (modulo their number)


def _eight_bit(text: str, codec: str, noise: bytes) -> bytes:
    value = noise if codec == "raw" else text.encode(codec, "replace") + noise
    return value.replace(b"\n", b" ").replace(b"\r", b" ")


def _encoded_word(charset: str, kind: bytes, payload: bytes, end: bytes) -> bytes:
    return b"=?" + charset.encode("utf-8", "surrogatepass") + b"?" + kind + b"?" + payload + end


def _in_header(name: bytes, word: bytes) -> tuple[bytes, bytes]:
    if name == b"From":
        return name, word + b" <anna@customer.example.org>"
    if name == b"To":
        return name, b'"' + word + b'" <support@example.com>, ' + word
    if name == b"Content-Disposition":
        return name, b'attachment; filename="' + word + b'"; filename*=' + word
    return name, b"Re: " + word + b" " + word + b"tail"


eight_bit_headers = st.builds(
    add_header,
    st.sampled_from([b"Subject", b"From", b"To", b"Cc", b"X-Junk", b"Content-Type"]),
    st.builds(
        _eight_bit,
        st.text(min_size=1, max_size=30),
        st.sampled_from(["utf-8", "cp1251", "koi8-r", "latin-1", "raw"]),
        st.binary(max_size=12),
    ),
)
encoded_words = st.sampled_from(ENCODED_WORDS) | st.builds(
    _encoded_word,
    st.sampled_from(BOGUS_CHARSETS),
    st.sampled_from([b"B", b"Q", b"b", b"q", b"X", b""]),
    st.binary(max_size=24).map(lambda b: bytes(c for c in b if c not in b"\r\n?")),
    st.sampled_from([b"?=", b"?", b"", b"?= =?utf-8?B?"]),
)
broken_encoded_words = st.builds(
    lambda pair: add_header(*pair),
    st.builds(
        _in_header,
        st.sampled_from([b"Subject", b"From", b"To", b"Content-Disposition"]),
        encoded_words,
    ),
)
hostile_values = st.builds(
    add_header, st.sampled_from(HEADER_NAMES), st.sampled_from(HOSTILE_VALUES)
)
long_headers = st.sampled_from(sorted(LONG_KINDS)).flatmap(
    lambda kind: st.builds(
        long_header,
        st.just(LONG_KINDS[kind]) if LONG_KINDS[kind] else st.sampled_from([b"Subject", b"X-Junk"]),
        st.just(kind),
        st.sampled_from([4_000, 9_000, 60_000, 120_000, 300_000, 1_100_000]),
        st.booleans(),
    )
)

MUTATIONS = st.one_of(
    st.builds(
        duplicate_header,
        picks,
        st.sampled_from(["before", "after", "top", "bottom"]),
        st.none() | st.sampled_from(HOSTILE_VALUES),
    ),
    st.builds(weird_fold, picks, positions, st.sampled_from(FOLDS)),
    st.builds(
        control_bytes,
        positions,
        st.binary(min_size=1, max_size=4).map(lambda b: bytes(CONTROL[x % 33] for x in b)),
    ),
    eight_bit_headers,
    broken_encoded_words,
    hostile_values,
    st.builds(drop_header, st.sampled_from(HEADER_NAMES)),
    long_headers,
    st.builds(boundary_damage, st.sampled_from(BOUNDARY_DAMAGE), picks, positions),
    st.builds(
        charset_damage,
        st.sampled_from(BOGUS_CHARSETS).map(lambda c: c.encode("utf-8", "surrogatepass")),
        picks,
    ),
    st.builds(
        transfer_encoding_damage,
        st.sampled_from(TRANSFER_ENCODINGS),
        picks,
        positions,
        st.sampled_from(
            [b"!!", b"=", b"====", b"=ZZ", b"=\n", b"\x00\xff", b"A", b"begin 644 x\n"]
        ),
    ),
    st.builds(
        nest,
        st.sampled_from([1, 2, 5, 30, 99, 100, 101, 500, 3000]),
        st.sampled_from(["multipart", "rfc822", "alternating"]),
        st.sampled_from(["distinct", "same", "prefix", "dashes"]),
        st.booleans(),
    ),
    st.builds(
        many_parts,
        st.sampled_from([2, 50, 998, 999, 1000, 1500]),
        st.sampled_from([b"text/plain", b"application/octet-stream", b"message/rfc822"]),
    ),
    st.builds(truncate, st.sampled_from(["anywhere", "body", "after_headers"]), positions),
    st.builds(line_endings, st.sampled_from(["crlf", "cr", "lf", "mixed", "double_cr"])),
    st.builds(byte_noise, positions, st.integers(0, 40), st.binary(max_size=16)),
)
SEEDS = seeds()
SEEDS_BY_NAME = {seed.name: seed for seed in SEEDS}


def cases(max_mutations: int = 4) -> st.SearchStrategy[Case]:
    return st.builds(
        Case,
        st.sampled_from(SEEDS),
        st.lists(MUTATIONS, min_size=1, max_size=max_mutations).map(tuple),
    )
