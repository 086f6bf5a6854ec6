"""Our own text mail written straight to the bytes that go out.

Building an `EmailMessage` and serializing it parses every header we set into a structured
object and folds it again on output: about 5 ms of the 8 ms an acknowledgement cost, most
of intake's time. The mail we compose has one known shape (a few headers, a text body and
perhaps its HTML alternative), so it is written here with the standard library's encoders
(`email.header.Header` for RFC 2047 words, `binascii` for the bodies). `tests/unit/test_wire.py`
parses generated mail back and checks that it says exactly what was written.

Lines end in CRLF, as they are stored and sent; every header and body is 7-bit.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Sequence
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
    if not _needs_encoding(value) and len(name) + 2 + len(value) <= MAX_LINE:
        return f"{name}: {value}{CRLF}"
    charset = "utf-8" if _needs_encoding(value) else "us-ascii"
    folded = Header(value, charset, maxlinelen=MAX_LINE, header_name=name).encode(linesep=CRLF)
    return f"{name}: {folded}{CRLF}"


def mailbox(display_name: str, addr_spec: str) -> str:
    """`Name <addr>`: the name quoted when it must be, encoded when it is not ASCII."""
    if not display_name:
        return addr_spec
    if not _needs_encoding(display_name):
        return formataddr((display_name, addr_spec))
    words = Header(display_name, "utf-8", maxlinelen=MAX_LINE).encode(linesep=CRLF)
    return f"{words} <{addr_spec}>"


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
