"""Our own text mail written straight to the bytes that go out.

Building an `EmailMessage` and serializing it parses every header we set into a structured
object and folds it again on output: about 5 ms of the 8 ms an acknowledgement cost, most
of intake's time. The mail we compose has one known shape (a few headers, a text body and
perhaps its HTML alternative), so it is written here with the standard library's encoders
(RFC 2047 words written here, `binascii` for the bodies; `email.header.Header` only folds long
ASCII text). `tests/unit/test_wire.py` parses generated mail back and checks that it says
exactly what was written.

Lines end in CRLF, as they are stored and sent; every header and body is 7-bit.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Iterator, Sequence
from email.header import Header
from email.utils import formataddr

CRLF = "\r\n"
MAX_LINE = 78  # RFC 5322's recommended line length, as the stdlib's SMTP policy uses
_HIGH = bytes(range(128, 256))


def _needs_encoding(value: str) -> bool:
    # Text that merely looks like an encoded word would be decoded by the reader.
    return not value.isascii() or "=?" in value


def header(name: str, value: str) -> str:
    """One unstructured header (Subject and the like), folded, RFC 2047 where needed.
    `value` must be free of line breaks (compose's clean_header)."""
    if _needs_encoding(value):
        return f"{name}: {encoded_words(value, MAX_LINE - len(name) - 2)}{CRLF}"
    if len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}{CRLF}"
    folded = Header(value, "us-ascii", maxlinelen=MAX_LINE, header_name=name).encode(linesep=CRLF)
    return f"{name}: {folded}{CRLF}"


def mailbox(display_name: str, addr_spec: str) -> str:
    """`Name <addr>`: the name quoted when it must be, encoded when it is not ASCII."""
    if not display_name:
        return addr_spec
    if not _needs_encoding(display_name):
        return formataddr((display_name, addr_spec))
    return f"{encoded_words(display_name, MAX_LINE)} <{addr_spec}>"


# RFC 2047: an encoded word is at most 75 characters, `=?utf-8?b?` and `?=` included, and
# holds whole characters; the "Q" encoding writes these bytes as they are, a space as "_",
# and every other byte as "=XX".
_WORD_MAX = 75
_WORD_FRAME = len("=?utf-8?b??=")
_Q_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/")
_Q_AS_ONE = bytes(_Q_PLAIN) + b" "  # the bytes "q" writes as one character


def _q_length(data: bytes) -> int:
    return len(data) + 2 * len(data.translate(None, _Q_AS_ONE))


def _q_encoded(data: bytes) -> str:
    return "".join(
        chr(byte) if byte in _Q_PLAIN else "_" if byte == 0x20 else f"={byte:02X}" for byte in data
    )


def encoded_words(text: str, first_room: int) -> str:
    """`text` as UTF-8 encoded words, one per line (CRLF and a space between them), the
    first in `first_room` characters: base64 ("b") or "q", whichever is shorter for the
    whole text. Whitespace between encoded words is not part of the text, so a word may
    end anywhere between two characters."""
    data = text.encode("utf-8", "replace")  # (parsed mail holds no lone surrogates)
    b_length, q_length = 4 * -(-len(data) // 3), _q_length(data)
    use_b = b_length < q_length
    room = min(first_room, _WORD_MAX) - _WORD_FRAME
    if min(b_length, q_length) <= room:  # most names and subjects: one word
        return _word(data, use_b)
    if use_b:
        return f"{CRLF} ".join(_word(piece, True) for piece in _b_pieces(data, room))
    words: list[str] = []
    chunk = bytearray()
    size = 0  # the chunk's encoded length
    for char in text:
        piece = char.encode("utf-8", "replace")
        grown = size + _q_length(piece)
        if grown > room and chunk:
            words.append(_word(bytes(chunk), False))
            chunk.clear()
            room = _WORD_MAX - _WORD_FRAME  # later lines: a space, then the word
            grown = _q_length(piece)
        chunk += piece
        size = grown
    if chunk:
        words.append(_word(bytes(chunk), False))
    return f"{CRLF} ".join(words)


def _b_pieces(data: bytes, first_room: int) -> Iterator[bytes]:
    """UTF-8 `data` cut between characters into pieces whose base64 fits in `first_room`
    characters, then in a whole word's room."""
    start, room = 0, first_room
    while start < len(data):
        end = min(start + max(room // 4 * 3, 4), len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character
            end -= 1
        yield data[start:end]
        start, room = end, _WORD_MAX - _WORD_FRAME


def _word(data: bytes, use_b: bool) -> str:
    if use_b:
        return f"=?utf-8?b?{base64.b64encode(data).decode('ascii')}?="
    return f"=?utf-8?q?{_q_encoded(data)}?="


def address_header(name: str, mailboxes: Sequence[str]) -> str:
    """An address list, one mailbox per line once they no longer fit on one."""
    return fold(name, mailboxes, ",")


def id_header(name: str, ids: Iterable[str]) -> str:
    """Message-ID, In-Reply-To, References: `<id>` tokens folded between IDs and never
    encoded (no reader decodes RFC 2047 in these headers)."""
    return fold(name, [f"<{i}>" for i in ids], "")


def fold(name: str, tokens: Sequence[str], separator: str) -> str:
    """A header of `tokens` (followed by `separator` but the last), folded between tokens,
    never inside one."""
    lines = [f"{name}:"]
    for index, token in enumerate(tokens):
        piece = token + (separator if index < len(tokens) - 1 else "")
        last = lines[-1].rsplit(CRLF, 1)[-1]  # a token may itself span lines
        if index and len(last) + 1 + len(piece.split(CRLF, 1)[0]) > MAX_LINE:
            lines.append("")  # the continuation line starts with the space added below
        lines[-1] += " " + piece
    return CRLF.join(lines) + CRLF


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF line ends) for UTF-8 text:
    7bit when it is ASCII in short lines, else quoted-printable or base64, the shorter."""
    lines = text.encode("utf-8").splitlines()
    if all(len(line) <= MAX_LINE for line in lines):
        joined = b"\r\n".join(lines) + b"\r\n"
        if joined.isascii():
            return "7bit", joined
    data = b"\n".join(lines) + b"\n"
    escaped = len(data) - len(data.translate(None, _HIGH)) + data.count(b"=")
    # Quoted-printable writes each of those bytes as three characters, base64 every three
    # bytes as four: compare the two lengths, roughly, without encoding twice.
    if 2 * escaped <= len(data) // 3:
        encoded = binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")
        return "quoted-printable", encoded
    return "base64", base64.encodebytes(data).replace(b"\n", b"\r\n")


def _part(subtype: str, text: str) -> bytes:
    cte, body = _body(text)
    head = f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
    head += f"Content-Transfer-Encoding: {cte}{CRLF}{CRLF}"
    return head.encode("ascii") + body


def text_message(headers: Sequence[str], text: str, html: str | None = None) -> bytes:
    """The whole message: `headers` (lines from the functions above, in order), then the
    text body, or a multipart/alternative of the text and its HTML."""
    head = "".join(headers) + f"MIME-Version: 1.0{CRLF}"
    if html is None:
        return head.encode("ascii") + _part("plain", text)
    parts = [_part("plain", text), _part("html", html)]
    boundary = _boundary(parts)
    head += f'Content-Type: multipart/alternative; boundary="{boundary}"{CRLF}{CRLF}'
    # The line break before each delimiter belongs to the delimiter (RFC 2046), so each
    # part keeps its own last line break.
    out = [head.encode("ascii"), f"--{boundary}{CRLF}".encode("ascii"), parts[0]]
    out += [f"{CRLF}--{boundary}{CRLF}".encode("ascii"), parts[1]]
    out.append(f"{CRLF}--{boundary}--{CRLF}".encode("ascii"))
    return b"".join(out)


def _boundary(parts: Sequence[bytes]) -> str:
    # "=_" never occurs in quoted-printable or base64; 7bit text is checked.
    while True:
        boundary = "=_" + secrets.token_hex(12)
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary
