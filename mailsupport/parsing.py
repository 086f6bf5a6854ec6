"""Raw message bytes -> Inbound. The only module that imports mail-parser.

mail-parser turns the bytes into a stdlib `email.message.Message` (guarding against
recursion on absurdly nested MIME) and reads the Date header. Everything else is read from
that Message here, because mail-parser's own views do not fit a support desk: it shows the
text of a forwarded message as the outer body, drops message/rfc822 and delivery-status
parts, invents random names for unnamed attachments, falls back to UTF-8 with replacement
characters for any undeclared or mislabelled 8-bit text, and drops raw 8-bit header bytes.

Never raises for damaged mail: damage is described in `Inbound.defects`. Only input that
is not a message at all (empty, no header block, binary), or built to make parsing slow
(nested too deeply, too many parts, huge header sections: see `_BoundedMessage`), raises
PermanentError.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import io
import logging
import mimetypes
import os
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.errors import MessageError
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesFeedParser
from email.policy import Compat32, compat32
from email.utils import getaddresses, parsedate_tz
from typing import Any

from mailparser.utils import parse_mail_date

from mailsupport.errors import PermanentError
from mailsupport.htmltext import html_to_text, sanitize_html
from mailsupport.mail import Address, Attachment, Inbound

__all__ = [
    "decode_bytes",
    "decode_header_value",
    "lookup_charset",
    "normalize_msgid",
    "parse",
    "parse_msgid_list",
    "safe_filename",
]

# mail-parser logs warnings for ordinary mail ("content not handled"); they are not ours
# to show. Above CRITICAL nothing is emitted; the NullHandler keeps logging's last-resort
# stderr handler out of it even if someone lowers the level again.
_mailparser_log = logging.getLogger("mailparser")
_mailparser_log.setLevel(logging.CRITICAL + 1)
_mailparser_log.propagate = False
_mailparser_log.addHandler(logging.NullHandler())

MAX_MIME_DEPTH = 100  # real mail nests under 10 levels (Postfix's mime_nesting_limit)
MAX_MIME_PARTS = 1000  # real mail has tens
MAX_HEADER_SECTION = 128 * 1024  # characters of headers in one part; real mail: under 64 KiB
MAX_PARAM_HEADER = 8 * 1024  # one Content-Type or Content-Disposition value
MAX_PARAMS = 100  # ';' in one Content-Type or Content-Disposition value
# Addresses read from one header (To, Cc...): each becomes a participant of the ticket.
MAX_ADDRESSES = 1000  # Postfix's smtpd_recipient_limit
MAX_MSGID_LENGTH = 250
_FILENAME_MAX = 200
_SAMPLE = 64 * 1024  # bytes looked at when guessing a charset


# ------------------------------------------------------------------------------------------
# Charsets
# ------------------------------------------------------------------------------------------

# Labels seen in real mail that Python does not know, or where a superset decodes what
# senders actually put behind the label.
_CHARSET_ALIASES = {
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "us-ascii": "ascii",
    "ansi_x3.4-1968": "ascii",
    "iso-8859-1": "cp1252",  # as browsers do: "latin-1" mail is full of cp1252 quotes
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "csgb2312": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "chinese": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "euc-kr": "cp949",
    "korean": "cp949",
    "big5": "cp950",
    "x-big5": "cp950",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "csshiftjis": "cp932",
    "windows-31j": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",  # adds half-width katakana, which phones send
    "koi8-ru": "koi8_u",
    "x-mac-cyrillic": "mac_cyrillic",
    "x-mac-roman": "mac_roman",
}
# Labels that mean "I don't know": decode by guessing.
_UNKNOWN_LABELS = frozenset(
    {"", "unknown", "unknown-8bit", "x-unknown", "x-user-defined", "default", "none",
     "8bit", "charset", "binary", "us-ascii-8bit"}
)  # fmt: skip
_WINDOWS_LABEL = re.compile(r"(?:x-)?(?:windows|win|cp|ms|ansi)[-_ ]?(\d{3,4})")
_ISO8859_LABEL = re.compile(r"iso[-_ ]?8859[-_ ]?(\d{1,2})(?:[-_][ie])?")
# Python codecs (by codecs.lookup().name) that are not mail charsets or smuggle in escapes.
_REFUSED_CODECS = frozenset(
    {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape", "mbcs", "oem"}
)
# Single-byte charsets whose labels are checked against the bytes (codecs.lookup().name).
_CYRILLIC_SINGLE_BYTE = frozenset({"cp1251", "koi8-r", "koi8-u"})
_LATIN_SINGLE_BYTE = frozenset({"cp1252", "iso8859-1", "ascii"})

_HIGH_BYTES = bytes(range(0x80, 0x100))
_LATIN_ADJACENT = re.compile(rb"[A-Za-z][\x80-\xff]|[\x80-\xff][A-Za-z]")
_COMMON_RUSSIAN = "оеаинтсрвл"  # the most frequent lowercase letters of Russian text
_CASE_BREAK = re.compile("[а-яё][А-ЯЁ]")  # "чПРТПУ": KOI8-R read as cp1251
_SURROGATES = re.compile("[\ud800-\udfff]")


def lookup_charset(label: str | None) -> str | None:
    """Python codec name (as codecs.lookup() spells it) for a MIME charset label, or None
    when the label is unknown or meaningless."""
    if label is None:
        return None
    name = label.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231 "utf-8*ru"
    if name in _UNKNOWN_LABELS:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    if match := _WINDOWS_LABEL.fullmatch(name):
        name = _CHARSET_ALIASES.get(f"cp{match.group(1)}", f"cp{match.group(1)}")
    elif match := _ISO8859_LABEL.fullmatch(name):
        name = _CHARSET_ALIASES.get(f"iso-8859-{match.group(1)}", f"iso8859_{match.group(1)}")
    try:
        codec = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if codec.name in _REFUSED_CODECS or not getattr(codec, "_is_text_encoding", True):
        return None
    return codec.name


def _high_count(data: bytes) -> int:
    return len(data) - len(data.translate(None, _HIGH_BYTES))


def _russian_score(text: str) -> int:
    """How much `text` looks like Russian: frequent lowercase letters, minus case breaks."""
    return sum(text.count(ch) for ch in _COMMON_RUSSIAN) - 3 * len(_CASE_BREAK.findall(text))


def _guess_single_byte(sample: bytes) -> tuple[str, int]:
    """cp1251, koi8-r or cp1252 for undeclared 8-bit text, with the Russian score."""
    high = _high_count(sample)
    if not high:
        return "ascii", 0
    # Accented Latin letters sit inside words of ASCII letters; Cyrillic words do not.
    if len(_LATIN_ADJACENT.findall(sample)) * 2 > high:
        return "cp1252", 0
    best, best_score = "cp1252", 0
    for codec in ("cp1251", "koi8-r"):  # on a tie cp1251 wins: it is far more common today
        score = _russian_score(sample.decode(codec, "replace"))
        if score > best_score:
            best, best_score = codec, score
    return best, best_score


def _decode_single_byte(data: bytes, codec: str) -> str:
    if codec == "cp1252":
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")  # cp1252 leaves five bytes undefined
    return data.decode(codec, "replace")


def _mostly_utf8(data: bytes) -> str | None:
    """UTF-8 with a few broken bytes (truncated mail) rather than another charset."""
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    return text if broken * 50 <= _high_count(data) else None


def _guess_decode(data: bytes) -> tuple[str, str]:
    """Text and the charset chosen for 8-bit bytes nobody labelled (correctly)."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    text = _mostly_utf8(data)
    if text is not None:
        return text, "utf-8"
    codec, _ = _guess_single_byte(data[:_SAMPLE])
    return _decode_single_byte(data, codec), codec


def _display_codec(codec: str) -> str:
    return {"cp1251": "windows-1251", "cp1252": "windows-1252"}.get(codec, codec)


def decode_bytes(data: bytes, label: str | None) -> tuple[str, str | None]:
    """Decode text in its declared charset, guessing where the label is absent or wrong.

    Returns the text and a note (None when the label was used as is). Never raises, and the
    text never holds lone surrogates.
    """
    if not data:
        return "", None
    text, note = _decode_labelled(data, label)
    if not text.isascii() and _SURROGATES.search(text):  # utf-7 and friends can make them
        text = _SURROGATES.sub("\ufffd", text)
    return text, note


def _decode_labelled(data: bytes, label: str | None) -> tuple[str, str | None]:
    codec = lookup_charset(label)
    if codec is None or (codec == "ascii" and not data.isascii()):
        if data.isascii():
            return data.decode("ascii"), None
        text, guessed = _guess_decode(data)
        if label is None or label.strip().lower() in _UNKNOWN_LABELS:
            # Undeclared UTF-8 is everyday mail; anything else is worth a note when the
            # guess turns out wrong.
            if guessed == "utf-8":
                return text, None
            return text, f"8-bit text without a charset; decoded as {_display_codec(guessed)}"
        return text, f"charset {label!r} unknown or wrong; decoded as {_display_codec(guessed)}"
    if codec in _CYRILLIC_SINGLE_BYTE or codec in _LATIN_SINGLE_BYTE:
        return _decode_single_byte_label(data, codec, label)
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        pass
    if codec != "utf-8":
        try:  # UTF-8 behind another label is the most common mislabel of all
            return data.decode("utf-8"), f"charset {label!r} wrong; decoded as utf-8"
        except UnicodeDecodeError:
            pass
    text = _mostly_utf8(data) if codec == "utf-8" else None
    if text is not None:
        return text, "invalid UTF-8 bytes replaced"
    if codec == "utf-8":
        text, guessed = _guess_decode(data)
        return text, f"charset {label!r} wrong; decoded as {_display_codec(guessed)}"
    return data.decode(codec, "replace"), f"bytes invalid in charset {label!r} replaced"


def _decode_single_byte_label(data: bytes, codec: str, label: str | None) -> tuple[str, str | None]:
    """Single-byte labels never fail to decode, so check that the bytes agree with them."""
    sample = data[:_SAMPLE]
    guessed, score = _guess_single_byte(sample)
    family = "koi8-r" if codec == "koi8-u" else codec
    high = _high_count(sample)
    # Swap only on strong evidence: many frequent Russian letters under the other reading.
    if guessed in ("cp1251", "koi8-r") and guessed != family and score >= max(3, high // 4):
        declared_score = _russian_score(sample.decode(codec, "replace"))
        if score > 2 * max(declared_score, 0):
            return (
                _decode_single_byte(data, guessed),
                f"charset {label!r} wrong; decoded as {_display_codec(guessed)}",
            )
    if codec == "ascii":
        return data.decode("ascii"), None  # only reached for pure ASCII data
    return _decode_single_byte(data, codec), None


# ------------------------------------------------------------------------------------------
# Headers
# ------------------------------------------------------------------------------------------

_FOLD = re.compile(rb"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([BbQq])\?([^?]*)\?=")
_HEADER_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_CLEAN = _B64_ALPHABET + b"=\r\n\t "
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET + b"=")


def _wire_bytes(value: object) -> bytes:
    """The bytes the stdlib parser saw: it smuggles 8-bit bytes through as surrogates."""
    return str(value).encode("utf-8", "surrogateescape")


def _header_text(value: object, notes: list[str] | None = None) -> str:
    """Unfolded header value as text, raw 8-bit bytes decoded; encoded words still encoded."""
    data = _FOLD.sub(b"", _wire_bytes(value))
    if data.isascii():
        return data.decode("ascii")
    text, codec = _guess_decode(data)
    if notes is not None and codec != "utf-8":  # raw UTF-8 headers are allowed (RFC 6532)
        notes.append(f"raw 8-bit bytes decoded as {_display_codec(codec)}")
    return text


def _clean_header(text: str) -> str:
    """No line breaks or control characters survive into a header value (header injection)."""
    return _HEADER_CONTROLS.sub(" ", text).strip()


def _b64decode(data: bytes) -> tuple[bytes, bool]:
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
        return _b64decode(data)[0]
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


# ------------------------------------------------------------------------------------------
# Message-IDs
# ------------------------------------------------------------------------------------------

_ID_STOP = frozenset(' \t\r\n,;<("')
_ID_JUNK = re.compile(r"[\s\x00-\x1f\x7f<>]+")


def _skip_comment(value: str, i: int) -> int:
    """Index after the (possibly nested) comment starting at value[i] == '('."""
    depth = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _msgid_tokens(value: str) -> Iterator[tuple[bool, str]]:
    """(bracketed, token) pairs: <...> tokens, and bare words containing '@'.

    Comments and quoted strings outside brackets are skipped, so "(Bob's message of ...)"
    and 'Your message of "..."' never produce IDs.
    """
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "<":
            end = value.find(">", i + 1)
            if end == -1:  # unclosed: up to the next whitespace
                end = i + 1
                while end < n and not value[end].isspace():
                    end += 1
            yield True, value[i + 1 : end]
            i = end + 1
        elif ch == "(":
            i = _skip_comment(value, i)
        elif ch == '"':
            end = value.find('"', i + 1)
            i = n if end == -1 else end + 1
        elif ch in _ID_STOP:
            i += 1
        else:
            start = i
            while i < n and value[i] not in _ID_STOP:
                i += 1
            if "@" in value[start:i]:
                yield False, value[start:i]


def _clean_msgid(token: str) -> str | None:
    token = _ID_JUNK.sub("", token)
    if not token:
        return None
    if len(token) > MAX_MSGID_LENGTH:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"h{digest}@long-id.invalid"
    return token


def normalize_msgid(token: str | None) -> str | None:
    """One Message-ID without angle brackets, or None when there is none.

    Takes the first <...> token, else the first bare word containing '@'; comments are
    ignored. IDs longer than 250 characters become a stable hash (the same in References).
    """
    if not token:
        return None
    first_bare = None
    for bracketed, candidate in _msgid_tokens(token):
        if bracketed:
            cleaned = _clean_msgid(candidate)
            if cleaned:
                return cleaned
        elif first_bare is None:
            first_bare = candidate
    return _clean_msgid(first_bare) if first_bare else None


def parse_msgid_list(value: str | None) -> tuple[str, ...]:
    """All Message-IDs in an In-Reply-To/References value, in order, without duplicates.

    Tolerates trailing comments, commas, and IDs without angle brackets.
    """
    if not value:
        return ()
    seen: dict[str, None] = {}
    for _, candidate in _msgid_tokens(value):
        cleaned = _clean_msgid(candidate)
        if cleaned:
            seen.setdefault(cleaned, None)
    return tuple(seen)


# ------------------------------------------------------------------------------------------
# Addresses and dates
# ------------------------------------------------------------------------------------------

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def _plausible_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    if at:
        return bool(local and domain)
    return bool(_LOCAL_PART.fullmatch(address))  # "root", "MAILER-DAEMON": local senders


def _join_split_names(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Doe, John <j@example.org> (an unquoted comma) parses as 'Doe' plus 'John <...>'."""
    out: list[tuple[str, str]] = []
    for name, address in pairs:
        if out and "@" in address and name and not out[-1][0] and "@" not in out[-1][1]:
            stray = out.pop()[1]
            if stray:
                name = f"{stray}, {name}"
        out.append((name, address))
    return out


def _addresses(values: list[str], notes: list[str]) -> tuple[Address, ...]:
    """Mailboxes from raw (8-bit decoded, RFC 2047 still encoded) header values."""
    if not values:
        return ()
    try:
        pairs = getaddresses(values)
    except (RecursionError, ValueError, IndexError) as exc:  # deeply nested comments
        notes.append(f"address header unreadable ({type(exc).__name__})")
        return ()
    result: dict[str, Address] = {}
    for name, address in _join_split_names(pairs):
        address = address.strip()
        if "<" in address:  # '"Unclosed <a@example.org>' keeps the brackets in the address
            address = address[address.rfind("<") + 1 :].rstrip(">").strip()
        address = _clean_header(address)
        if not address or " " in address or not _plausible_address(address):
            continue
        name = _clean_header(decode_header_value(name, notes))
        if name.lower() == address.lower() or name.strip("'\"") == address:
            name = ""
        if len(result) >= MAX_ADDRESSES and address.lower() not in result:
            notes.append(f"more than {MAX_ADDRESSES} addresses in one header; the rest ignored")
            break
        result.setdefault(address.lower(), Address(name, address))
    return tuple(result.values())


# Something that reads as an address inside a display name.
_ADDRESS_IN_NAME = re.compile(r"[^\s@<>()\"',;:]+@[^\s@<>()\"',;:]+\.[^\s@<>()\"',;:]+")


def sender_doubt(values: list[str], notes: list[str]) -> str:
    """Why these From header values name no single clear mailbox; "" when they do.

    A mail client shows the display name, or the first of several addresses, so
    `From: anna@cust.example <eve@evil.example>` reads as anna while replies go to eve.
    Mail that is not plain about who sent it is treated as a stranger's."""
    if len(values) > 1:
        return f"{len(values)} From headers"
    found = _addresses(values, [])
    if len(found) > 1:
        return f"{len(found)} addresses in From ({', '.join(a.address for a in found[:3])})"
    if len(found) == 1:
        named = [m for m in _ADDRESS_IN_NAME.findall(found[0].name) if m.lower() != found[0].key]
        if named:
            return f"the display name is an address ({named[0]}) other than the sender's"
    return ""


def _parse_date(
    value: str | None, from_mailparser: datetime | None, notes: list[str]
) -> datetime | None:
    """Timezone-aware UTC; a missing zone counts as UTC."""
    if from_mailparser is not None:
        return from_mailparser.astimezone(UTC)
    if value is None:
        notes.append("no Date header")
        return None
    parsed = parsedate_tz(value)  # tolerant of missing zones and odd spacing
    if parsed is not None:
        try:
            stamp = datetime(*parsed[:6], tzinfo=UTC)
            return stamp - timedelta(seconds=parsed[9] or 0)
        except (ValueError, OverflowError):
            pass
    try:
        iso = datetime.fromisoformat(value.strip())
        return (iso if iso.tzinfo else iso.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        notes.append(f"unreadable Date header: {value[:100]!r}")
        return None


# ------------------------------------------------------------------------------------------
# MIME parts
# ------------------------------------------------------------------------------------------

_DEFECT_TEXT = {
    "StartBoundaryNotFoundDefect": "multipart boundary declared but never found",
    "CloseBoundaryNotFoundDefect": "closing MIME boundary missing",
    "FirstHeaderLineIsContinuationDefect": "first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": "a 'From ' envelope line inside the headers",
    "MissingHeaderBodySeparatorDefect": "a line in the header block is not a header",
    "MultipartInvariantViolationDefect": "multipart without any parts",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with a 7bit-incompatible "
    "transfer encoding",
    "NoBoundaryInMultipartDefect": "multipart without a boundary parameter",
}
_EXTENSIONS = {
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
    "application/octet-stream": ".bin",
    "image/jpeg": ".jpg",
}
_MIME_TYPES = mimetypes.MimeTypes()  # built-in table only: same answers on every machine
_FILENAME_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FILENAME_RESERVED = re.compile(r'[<>:"|?*]')  # not allowed in Windows file names
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_PLAIN_CTE = frozenset({"", "7bit", "8bit", "binary"})


def _extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _MIME_TYPES.guess_extension(content_type) or ""


def safe_filename(name: str | None, index: int, content_type: str) -> str:
    """A file name safe to use on disk: basename only, no control characters, no hidden
    files, at most 200 characters with the extension kept; else `attachment-N.ext`."""
    name = unicodedata.normalize("NFC", name or "")  # macOS sends decomposed letters
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _FILENAME_RESERVED.sub("_", _FILENAME_CONTROLS.sub("", name))
    name = name.strip().lstrip(".").rstrip(". ")  # "..foo" -> "foo"; Windows drops trailing dots
    if not name:
        return f"attachment-{index}{_extension_for(content_type)}"
    if len(name) > _FILENAME_MAX:
        root, ext = os.path.splitext(name)
        if len(ext) > 16:
            root, ext = name, ""
        name = root[: _FILENAME_MAX - len(ext)].rstrip(". ") + ext
    return name


def _param_text(value: str | tuple[str | None, str | None, str]) -> str:
    """A MIME parameter value as text: RFC 2231 (charset'lang'%XX) or RFC 2047 or 8-bit."""
    if isinstance(value, tuple):
        charset, _language, text = value
        try:
            data = text.encode("latin-1", "surrogateescape")  # the stdlib keeps octets as chars
        except UnicodeEncodeError:
            data = text.encode("utf-8", "surrogateescape")
        return decode_bytes(data, charset)[0]
    return decode_header_value(_header_text(value))


_PARAM = re.compile(r';\s*([^=\s;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def _crude_params(value: str) -> list[tuple[str, str]]:
    """Parameters read without RFC 2231 continuation logic, for headers the stdlib chokes
    on (it raises TypeError when `name*=` and `name*0=` are mixed)."""
    params = [(value.split(";", 1)[0].strip().lower(), "")]
    seen = set()
    for name, raw_value in _PARAM.findall(value):
        name = name.lower().split("*", 1)[0]
        if name not in seen:
            seen.add(name)
            params.append((name, raw_value.strip().strip('"')))
    return params


class _BoundedMessage(Message):
    """The parser's message class: gives up early, with PermanentError, on mail built to
    make parsing slow, before the slow part starts.

    The stdlib parser checks every line of a multipart against the boundary of every
    enclosing multipart (time: lines x depth, and the depth was bounded only by the
    recursion limit; 1 MB of lines 95 deep took 11 s), and splits parameters in time
    quadratic in their number (a 64 KiB Content-Type took 3.6 s per call, and every part
    is asked several times). Long header sections cost mail-parser super-linear time too
    (RFC 2047 and address decoding: 1 MB took 8-20 s). The parser calls attach() for every
    part as it starts, and set_raw() for every header.
    """

    def __init__(self, policy: Any = compat32) -> None:
        super().__init__(policy)
        self._root = self
        self._depth = 0
        self._parts = 1
        self._header_chars = 0

    def attach(self, payload: Any) -> None:
        if isinstance(payload, _BoundedMessage):
            root = self._root
            root._parts += 1
            payload._root, payload._depth = root, self._depth + 1
            if payload._depth > MAX_MIME_DEPTH:
                raise PermanentError(f"MIME parts nested more than {MAX_MIME_DEPTH} deep")
            if root._parts > MAX_MIME_PARTS:
                raise PermanentError(f"more than {MAX_MIME_PARTS} MIME parts")
        super().attach(payload)

    def set_raw(self, name: str, value: Any) -> None:
        self._header_chars += len(name) + len(value) + 3  # ": " and a line break
        if self._header_chars > MAX_HEADER_SECTION:
            raise PermanentError(f"header section larger than {MAX_HEADER_SECTION} characters")
        if name.lower() in ("content-type", "content-disposition") and (
            len(value) > MAX_PARAM_HEADER or value.count(";") > MAX_PARAMS
        ):
            raise PermanentError(
                f"{name[:40]} header longer than {MAX_PARAM_HEADER} characters "
                f"or with more than {MAX_PARAMS} parameters"
            )
        super().set_raw(name, value)


class _TolerantMessage(_BoundedMessage):
    """Survives parameters the stdlib cannot decode."""

    def _get_params_preserve(self, failobj: object, header: str) -> object:
        try:
            return super()._get_params_preserve(failobj, header)
        except (TypeError, ValueError, IndexError):
            value = self.get(header)
            return failobj if value is None else _crude_params(str(value))


def _params(part: Message, header: str = "content-type") -> list[tuple[str, object]]:
    try:
        return part.get_params([], header=header)
    except (TypeError, ValueError, IndexError):
        value = part.get(header)
        return [] if value is None else list(_crude_params(str(value)))


def _param(part: Message, name: str, header: str = "content-type") -> object:
    """One parameter value (str, or an RFC 2231 tuple), or None."""
    for key, value in _params(part, header)[1:]:
        if key == name:
            return value
    return None


def _filename_param(part: Message) -> str | None:
    """filename= (Content-Disposition), else name= (Content-Type); RFC 2231 forms win."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        values = [v for k, v in _params(part, header)[1:] if k == param and v]
        if values:
            best = next((v for v in values if isinstance(v, tuple)), values[0])
            text = _clean_header(_param_text(best))
            if text:
                return text
    return None


def _content_type(part: Message) -> str:
    ctype = part.get_content_type()
    return ctype if _CONTENT_TYPE.fullmatch(ctype) else "application/octet-stream"


def _content_id(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    text = _header_text(value).strip()
    if "<" in text:
        text = text[text.find("<") + 1 :].split(">", 1)[0]
    return _ID_JUNK.sub("", text) or None


def _charset_label(part: Message) -> str | None:
    value = _param(part, "charset")
    if isinstance(value, tuple):  # charset*=utf-8''... (RFC 2231 applied to charset itself)
        value = value[2]
    return _header_text(value) if value else None


_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I
)


def _meta_charset(data: bytes) -> str | None:
    """The charset an HTML part declares in <meta> when the MIME header says nothing."""
    match = _META_CHARSET.search(data, 0, 4096)
    return match.group(1).decode("ascii") if match else None


def _transfer_encoding(part: Message) -> str:
    value = _header_text(part.get("content-transfer-encoding", "")).strip().strip("\"'")
    return re.split(r"[\s;]", value.lower(), maxsplit=1)[0]


def _leaf_bytes(part: Message, notes: list[str], where: str) -> bytes:
    """The decoded content of a non-multipart part."""
    # The public getters re-decode 8-bit payloads through the declared charset with
    # "replace", destroying bytes; the raw payload is what was on the wire.
    payload = part._payload
    if not isinstance(payload, str | bytes):
        return b""
    raw = _wire_bytes(payload) if isinstance(payload, str) else payload
    cte = _transfer_encoding(part)
    if cte == "base64":
        data, damaged = _b64decode(raw)
        if damaged:
            notes.append(f"{where}: damaged base64, decoded what was readable")
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(raw)
    if cte in _UUENCODE:
        decoded = part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else raw
    if cte not in _PLAIN_CTE:
        notes.append(f"{where}: unknown transfer encoding {cte[:40]!r}, content kept as is")
    return raw


class _VerbatimHeaders(Compat32):
    """compat32, writing ASCII header values back as they came (as it does 8-bit ones).

    compat32 re-wraps each line of them with email.header, which gives the same bytes for
    sane mail in time quadratic in the words of a line: a 60 kB line took 5 s per copy.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and value.isascii():  # 8-bit ones are already verbatim
            value = _LINE_BREAK.sub(self.linesep, value)  # its folds, in this linesep
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


_VERBATIM = _VerbatimHeaders()
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _flatten(message: Message, linesep: str) -> bytes:
    """A parsed (nested) message back to bytes; identical to the input for sane mail."""
    buffer = io.BytesIO()
    try:
        generator = BytesGenerator(buffer, mangle_from_=False, maxheaderlen=0, policy=_VERBATIM)
        generator.flatten(message, linesep=linesep)
    except (MessageError, UnicodeError, LookupError, ValueError, TypeError, AttributeError):
        return _flatten_raw(message, linesep)  # the generator chokes on some damage
    return buffer.getvalue()


def _flatten_raw(message: Message, linesep: str) -> bytes:
    """Headers and payload as they came, without the generator's charset handling."""
    nl = linesep.encode()
    out = [_wire_bytes(f"{name}: {value}") + nl for name, value in message.raw_items()]
    out.append(nl)
    payload = message._payload
    if isinstance(payload, list):
        boundary = _wire_bytes(_param(message, "boundary") or "")
        for part in payload:
            if isinstance(part, Message):
                out += [b"--", boundary, nl, _flatten(part, linesep), nl]
        out += [b"--", boundary, b"--", nl]
    elif payload is not None:
        out.append(_wire_bytes(payload))
    return b"".join(out)


_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # NUL breaks PostgreSQL text


def _normalize_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _TEXT_CONTROLS.sub("", text).rstrip()


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines (Thunderbird, Apple Mail)."""
    out: list[str] = []
    pending: list[str] = []
    pending_depth = 0

    def flush() -> None:
        if pending:
            prefix = ">" * pending_depth + (" " if pending_depth else "")
            out.append(prefix + "".join(pending))
            pending.clear()

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        flowed = content.endswith(" ") and content != "-- "
        if pending and depth != pending_depth:
            flush()
        pending_depth = depth
        pending.append(content[:-1] if flowed and delsp else content)
        if not flowed:
            flush()
    flush()
    return "\n".join(out)


class _Walk:
    """One pass over the MIME tree: body texts, attachments and damage notes."""

    def __init__(self, root: Message, linesep: str, notes: list[str]) -> None:
        self.root = root
        self.linesep = linesep
        self.notes = notes
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []

    def run(self) -> None:
        # Iterative, not recursive: depth is bounded by MAX_MIME_DEPTH, not the C stack.
        stack: list[tuple[Message, int, bool]] = [(self.root, 0, False)]
        number = 0
        while stack:
            part, depth, in_attachment = stack.pop()
            number += 1
            ctype = _content_type(part)
            where = "message" if part is self.root else f"part {number} ({ctype})"
            self._note_defects(part, where)
            disposition = part.get_content_disposition()
            if ctype.startswith("message/"):
                self._message_part(part, ctype)
            elif part.is_multipart():
                if depth >= MAX_MIME_DEPTH:
                    raise PermanentError(f"MIME parts nested more than {MAX_MIME_DEPTH} deep")
                inner = in_attachment or disposition == "attachment"
                children = part.get_payload()
                stack.extend((child, depth + 1, inner) for child in reversed(children))
            elif ctype.startswith("multipart/"):
                self._unsplit_multipart(part, where, in_attachment)
            else:
                self._leaf(part, ctype, disposition, where, in_attachment)

    def _note_defects(self, part: Message, where: str) -> None:
        for defect in part.defects:
            kind = type(defect).__name__
            text = _DEFECT_TEXT.get(kind) or (defect.__doc__ or kind).strip().splitlines()[0]
            self.notes.append(f"{where}: {text}")

    def _leaf(
        self, part: Message, ctype: str, disposition: str | None, where: str, in_attachment: bool
    ) -> None:
        data = _leaf_bytes(part, self.notes, where)
        filename = _filename_param(part)
        is_body = (
            ctype in ("text/plain", "text/html")
            and not in_attachment
            and disposition != "attachment"
            and (part is self.root or not filename)
        )
        if not is_body:
            content_id = _content_id(part)
            self._attach(
                filename,
                ctype,
                data,
                content_id,
                disposition == "inline" or (disposition is None and content_id is not None),
            )
            return
        label = _charset_label(part)
        if label is None and ctype == "text/html":
            label = _meta_charset(data)
        text, note = decode_bytes(data, label)
        if note:
            self.notes.append(f"{where}: {note}")
        if ctype == "text/html":
            self.html.append(text)
            return
        text = _normalize_text(text)
        if str(_param(part, "format")).lower() == "flowed":
            delsp = str(_param(part, "delsp")).lower() == "yes"
            text = _unflow(text, delsp)
        self.plain.append(text)

    def _unsplit_multipart(self, part: Message, where: str, in_attachment: bool) -> None:
        """A multipart whose boundary never occurs: its body is all there is; show it."""
        data = _leaf_bytes(part, self.notes, where)
        if in_attachment:
            self._attach(None, "text/plain", data, None, False)
            return
        text, _ = decode_bytes(data, None)
        self.notes.append(f"{where}: read as plain text")
        self.plain.append(_normalize_text(text))

    def _message_part(self, part: Message, ctype: str) -> None:
        """message/rfc822 and friends: one attachment holding the nested message's bytes."""
        payload = part.get_payload()
        if isinstance(payload, list):
            data = b"".join(_flatten(m, self.linesep) for m in payload)
        else:
            data = _leaf_bytes(part, self.notes, ctype)
        cte = _transfer_encoding(part)
        if isinstance(payload, list) and cte in ("base64", "quoted-printable"):
            # Not allowed for message/*, sent anyway: the stdlib parsed the encoded text.
            data = data.lstrip(b"\r\n")
            data = _b64decode(data)[0] if cte == "base64" else binascii.a2b_qp(data)
        filename = _filename_param(part)
        if not filename and ctype in ("message/rfc822", "message/global") and payload:
            nested = payload[0] if isinstance(payload, list) else None
            subject = nested.get("subject") if nested is not None else None
            if subject:
                filename = _clean_header(decode_header_value(_header_text(subject))) + ".eml"
        self._attach(filename, ctype, data, _content_id(part), False)

    def _attach(
        self, filename: str | None, ctype: str, data: bytes, content_id: str | None, inline: bool
    ) -> None:
        index = len(self.attachments) + 1
        self.attachments.append(
            Attachment(
                filename=safe_filename(filename, index, ctype),
                content_type=ctype,
                data=data,
                content_id=content_id,
                inline=inline,
            )
        )


# ------------------------------------------------------------------------------------------
# The whole message
# ------------------------------------------------------------------------------------------

_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
# Complete lines the stdlib parser takes for header lines (its headerRE).
_HEADER_LINES = re.compile(rb"(?:(?:From |[!-9;-~]*:|[ \t])[^\r\n]*(?:\r\n?|\n))*")
_HEADER_END = re.compile(rb"\n\r?\n|\r\r")  # CR-only: old Mac exports
_MAX_LEADING_GARBAGE = 4


def _message_start(raw: bytes, notes: list[str]) -> int:
    """Offset where the header block starts; PermanentError when there is none."""
    if not raw.strip():
        raise PermanentError("empty input: there is no message to parse")
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a BOM from some Windows tool
    while raw.startswith((b"\r\n", b"\n"), start):  # blank lines before the headers
        start = raw.index(b"\n", start) + 1
    end = _HEADER_END.search(raw, start)
    header_end = end.start() if end else len(raw)
    if raw.find(b"\x00", start, header_end) != -1:
        raise PermanentError("binary data where the headers should be: not an email message")
    for skipped in range(_MAX_LEADING_GARBAGE + 1):
        if _HEADER_LINE.match(raw, start) or (skipped == 0 and raw.startswith(b"From ", start)):
            if skipped:
                notes.append(f"skipped {skipped} line(s) before the headers")
            return start
        newline = raw.find(b"\n", start, header_end)
        if newline == -1:
            break
        start = newline + 1
    raise PermanentError("no header block: the input does not start with mail headers")


def _parse_message(raw: bytes, notes: list[str]) -> tuple[Message, datetime | None]:
    """Parse with the stdlib; the Date with mail-parser's reading of it (obsolete forms,
    alphabetic zones). mail-parser's full parse is not run: it walked and decoded every part
    only for us to walk them again, half the time of a parse."""
    message = _stdlib_parse(raw)
    value = message.get_all("date", [None])[0]
    if value is None:
        return message, None
    try:
        return message, parse_mail_date(str(value)).value
    except Exception as exc:  # a parser bug must not lose a customer's mail
        notes.append(f"mail-parser cannot read the Date ({type(exc).__name__})")
        return message, None


_FEED_SLICE = 1 << 20


def _stdlib_parse(raw: bytes) -> Message:
    """The stdlib's parse, fed a megabyte at a time. Parsing the whole at once (as
    `message_from_bytes` does) holds it as one decoded copy besides the lines of its parts:
    a 25 MB message peaked about 115 MB higher. Incremental feeding is what the stdlib's
    FeedParser is made for; the result is the same."""
    parser = BytesFeedParser(_factory=_TolerantMessage)
    for start in range(0, len(raw), _FEED_SLICE):
        parser.feed(raw[start : start + _FEED_SLICE])
    message = parser.close()
    assert isinstance(message, _TolerantMessage)
    return message


def _sanitize_note(note: str) -> str:
    return _clean_header(note.encode("utf-8", "backslashreplace").decode("utf-8"))


def parse(raw: bytes) -> Inbound:
    """Parse raw message bytes into an Inbound.

    Raises PermanentError only when the bytes are not a message or are nested too deeply;
    everything merely damaged parses, with notes in `defects`.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse() needs bytes, not {type(raw).__name__}")
    raw = bytes(raw)
    notes: list[str] = []
    start = _message_start(raw, notes)
    # _BoundedMessage refuses large header sections only after the stdlib has read all of
    # their lines (a million folded lines: 2 s); refuse a huge top-level one before that.
    # (A window, not the whole section: long lines, which may end it early, cost nothing.)
    window = 2 * MAX_HEADER_SECTION
    lines = _HEADER_LINES.match(raw, start, start + window)
    if lines is not None and lines.end() - start > window - 4096:
        raise PermanentError(f"header section larger than {(window - 4096) // 1024} KiB")
    body = raw[start:] if start else raw
    try:
        return _build(raw, body, notes)
    except RecursionError as exc:
        raise PermanentError("message nested too deeply to parse") from exc


def _build(raw: bytes, body: bytes, notes: list[str]) -> Inbound:
    message, mailparser_date = _parse_message(body, notes)
    first_line = body[: body.find(b"\n") + 1]
    linesep = "\r\n" if first_line.endswith(b"\r\n") else "\n"

    # Each header once: unfolded and 8-bit decoded (for addresses and IDs), then RFC 2047.
    raw_headers: dict[str, list[str]] = {}
    headers: list[tuple[str, str]] = []
    for name, value in message.raw_items():
        key = _clean_header(str(name).encode("ascii", "replace").decode()).lower()
        header_notes: list[str] = []
        text = _header_text(value, header_notes)
        raw_headers.setdefault(key, []).append(text)
        headers.append((key, _clean_header(decode_header_value(text, header_notes))))
        notes.extend(f"{key} header: {note}" for note in header_notes)
    first_decoded = {}
    for key, value in headers:
        first_decoded.setdefault(key, value)

    message_id = normalize_msgid(raw_headers.get("message-id", [None])[0])
    generated = message_id is None
    if generated:
        message_id = hashlib.sha256(raw).hexdigest()[:40] + "@generated.mailsupport.invalid"
        notes.append("no usable Message-ID; generated one from the message bytes")

    def id_list(name: str) -> tuple[str, ...]:
        ids = parse_msgid_list(" ".join(raw_headers.get(name, [])))
        return tuple(i for i in ids if i != message_id)

    from_ = _addresses(raw_headers.get("from", [])[:1], notes)
    if not from_:
        notes.append("no usable From address")
    doubt = sender_doubt(raw_headers.get("from", []), notes)

    walk = _Walk(message, linesep, notes)
    walk.run()
    plain = [t for t in walk.plain if t.strip()]
    if plain:
        text = "\n\n".join(plain)
    else:
        text = "\n\n".join(t for t in (html_to_text(h) for h in walk.html) if t)

    date_value = raw_headers.get("date", [None])[0]
    return Inbound(
        message_id=message_id,
        message_id_generated=generated,
        in_reply_to=id_list("in-reply-to"),
        references=id_list("references"),
        subject=first_decoded.get("subject", ""),
        from_=from_[0] if from_ else None,
        to=_addresses(raw_headers.get("to", []), notes),
        cc=_addresses(raw_headers.get("cc", []), notes),
        reply_to=_addresses(raw_headers.get("reply-to", []), notes),
        date=_parse_date(date_value, mailparser_date, notes),
        text=_normalize_text(text),
        html=sanitize_html(walk.html[0]) if walk.html else None,
        attachments=tuple(walk.attachments),
        headers=tuple(headers),
        defects=tuple(dict.fromkeys(_sanitize_note(n) for n in notes)),
        sender_doubt=doubt,
    )
