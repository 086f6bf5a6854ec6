"""Bytes in a declared, wrong or missing charset -> text.

A MIME charset label is mapped to a Python codec the way mail clients read it (latin-1 as
cp1252, gb2312 as gb18030...); labels that are absent, unknown or contradicted by the bytes
are replaced by a guess between UTF-8, cp1251, KOI8-R and cp1252, and the guess is noted.
"""

from __future__ import annotations

import codecs
import re

_SAMPLE = 64 * 1024  # bytes looked at when guessing a charset

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


def guess_decode(data: bytes) -> tuple[str, str]:
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


def display_codec(codec: str) -> str:
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
        text, guessed = guess_decode(data)
        if label is None or label.strip().lower() in _UNKNOWN_LABELS:
            # Undeclared UTF-8 is everyday mail; anything else is worth a note when the
            # guess turns out wrong.
            if guessed == "utf-8":
                return text, None
            return text, f"8-bit text without a charset; decoded as {display_codec(guessed)}"
        return text, f"charset {label!r} unknown or wrong; decoded as {display_codec(guessed)}"
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
        text, guessed = guess_decode(data)
        return text, f"charset {label!r} wrong; decoded as {display_codec(guessed)}"
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
                f"charset {label!r} wrong; decoded as {display_codec(guessed)}",
            )
    if codec == "ascii":
        return data.decode("ascii"), None  # only reached for pure ASCII data
    return _decode_single_byte(data, codec), None
