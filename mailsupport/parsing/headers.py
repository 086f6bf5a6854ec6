"""Header values: unfolding, raw 8-bit bytes, RFC 2047 encoded words, lenient base64.

The stdlib parser hands header values over as text with 8-bit bytes smuggled in as
surrogates; these helpers turn them back into the bytes that came, decode them, and strip
what must never reach a header value again (line breaks and control characters).
"""

from __future__ import annotations

import binascii
import re

from mailsupport.parsing.charsets import decode_bytes, display_codec, guess_decode

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([BbQq])\?([^?]*)\?=")
_HEADER_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_CLEAN = _B64_ALPHABET + b"=\r\n\t "
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET + b"=")


def wire_bytes(value: object) -> bytes:
    """The bytes the stdlib parser saw: it smuggles 8-bit bytes through as surrogates."""
    return str(value).encode("utf-8", "surrogateescape")


def header_text(value: object, notes: list[str] | None = None) -> str:
    """Unfolded header value as text, raw 8-bit bytes decoded; encoded words still encoded."""
    data = _FOLD.sub(b"", wire_bytes(value))
    if data.isascii():
        return data.decode("ascii")
    text, codec = guess_decode(data)
    if notes is not None and codec != "utf-8":  # raw UTF-8 headers are allowed (RFC 6532)
        notes.append(f"raw 8-bit bytes decoded as {display_codec(codec)}")
    return text


def clean_header(text: str) -> str:
    """No line breaks or control characters survive into a header value (header injection)."""
    return _HEADER_CONTROLS.sub(" ", text).strip()


def b64decode(data: bytes) -> tuple[bytes, bool]:
    """Lenient base64 as mail clients do it; the flag tells whether the input was damaged."""
    try:
        decoded = binascii.a2b_base64(data)
        pad = data.find(b"=")
        damaged = bool(data.translate(None, _B64_CLEAN)) or (
            pad != -1 and bool(data[pad:].strip(b"=\r\n\t "))
        )
        if not damaged:
            return decoded, False
    except binascii.Error:
        pass
    # Keep the alphabet only and decode each padded run on its own: some encoders pad every
    # line, and a2b_base64 silently stops at the first padding.
    pieces = []
    for run in data.translate(None, _NOT_B64).split(b"="):
        if len(run) % 4 == 1:
            run = run[:-1]  # a lone trailing character carries no byte
        if run:
            pieces.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return b"".join(pieces), True


def _decode_word(encoding: str, text: str) -> bytes:
    data = text.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        return b64decode(data)[0]
    return binascii.a2b_qp(data, header=True)


def decode_header_value(text: str, notes: list[str] | None = None) -> str:
    """Decode RFC 2047 encoded words, tolerating what real clients send.

    Adjacent words in one charset are joined before decoding (a UTF-8 character split over
    two words survives); whitespace between encoded words is dropped; words stuck to other
    text are decoded too; unknown or wrong charsets are guessed.
    """
    if "=?" not in text:
        return text
    pieces: list[str | tuple[str, list[bytes]]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        previous_encoded = bool(pieces) and isinstance(pieces[-1], tuple)
        if gap and not (previous_encoded and gap.isspace()):
            pieces.append(gap)
        charset = match.group(1).split("*", 1)[0].lower()
        data = _decode_word(match.group(2), match.group(3))
        last = pieces[-1] if pieces else None
        if isinstance(last, tuple) and last[0] == charset:
            last[1].append(data)
        else:
            pieces.append((charset, [data]))
        pos = match.end()
    pieces.append(text[pos:])
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        decoded, note = decode_bytes(b"".join(piece[1]), piece[0])
        if note and notes is not None:
            notes.append(note)
        out.append(decoded)
    return "".join(out)
