"""Reading one MIME part: its parameters, file name, types, Content-ID and content.

Each getter tolerates damage the stdlib raises on, and the content comes from the raw
payload decoded by its transfer encoding, so no byte is lost to a wrong charset before it
is decoded. `flatten` writes a nested message back to the bytes it came as.
"""

from __future__ import annotations

import binascii
import io
import re
from email.errors import MessageError
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from typing import Any

from mailsupport.parsing.charsets import decode_bytes
from mailsupport.parsing.headers import (
    b64decode,
    clean_header,
    decode_header_value,
    header_text,
    wire_bytes,
)
from mailsupport.parsing.mimetree import crude_params
from mailsupport.parsing.msgids import bare_content_id

_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_PLAIN_CTE = frozenset({"", "7bit", "8bit", "binary"})


def _param_text(value: str | tuple[str | None, str | None, str]) -> str:
    """A MIME parameter value as text: RFC 2231 (charset'lang'%XX) or RFC 2047 or 8-bit."""
    if isinstance(value, tuple):
        charset, _language, text = value
        try:
            data = text.encode("latin-1", "surrogateescape")  # the stdlib keeps octets as chars
        except UnicodeEncodeError:
            data = text.encode("utf-8", "surrogateescape")
        return decode_bytes(data, charset)[0]
    return decode_header_value(header_text(value))


def _params(part: Message, header: str = "content-type") -> list[tuple[str, object]]:
    try:
        return part.get_params([], header=header)
    except (TypeError, ValueError, IndexError):
        value = part.get(header)
        return [] if value is None else list(crude_params(str(value)))


def param_of(part: Message, name: str, header: str = "content-type") -> object:
    """One parameter value (str, or an RFC 2231 tuple), or None."""
    for key, value in _params(part, header)[1:]:
        if key == name:
            return value
    return None


def filename_of(part: Message) -> str | None:
    """filename= (Content-Disposition), else name= (Content-Type); RFC 2231 forms win."""
    for header, param in (("content-disposition", "filename"), ("content-type", "name")):
        values = [v for k, v in _params(part, header)[1:] if k == param and v]
        if values:
            best = next((v for v in values if isinstance(v, tuple)), values[0])
            text = clean_header(_param_text(best))
            if text:
                return text
    return None


def content_type_of(part: Message) -> str:
    ctype = part.get_content_type()
    return ctype if _CONTENT_TYPE.fullmatch(ctype) else "application/octet-stream"


def content_id_of(part: Message) -> str | None:
    value = part.get("content-id")
    if value is None:
        return None
    return bare_content_id(header_text(value))


def charset_label_of(part: Message) -> str | None:
    value = param_of(part, "charset")
    if isinstance(value, tuple):  # charset*=utf-8''... (RFC 2231 applied to charset itself)
        value = value[2]
    return header_text(value) if value else None


_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I
)


def meta_charset(data: bytes) -> str | None:
    """The charset an HTML part declares in <meta> when the MIME header says nothing."""
    match = _META_CHARSET.search(data, 0, 4096)
    return match.group(1).decode("ascii") if match else None


def transfer_encoding_of(part: Message) -> str:
    value = header_text(part.get("content-transfer-encoding", "")).strip().strip("\"'")
    return re.split(r"[\s;]", value.lower(), maxsplit=1)[0]


def leaf_bytes(part: Message, notes: list[str], where: str) -> bytes:
    """The decoded content of a non-multipart part."""
    # The public getters re-decode 8-bit payloads through the declared charset with
    # "replace", destroying bytes; the raw payload is what was on the wire.
    payload = part._payload
    if not isinstance(payload, str | bytes):
        return b""
    raw = wire_bytes(payload) if isinstance(payload, str) else payload
    cte = transfer_encoding_of(part)
    # A part parsed by `streaming` had its lines but the last decoded as they came.
    decoder = getattr(part, "decoder", None)
    if cte == "base64":
        data, damaged = decoder.finish(raw) if decoder is not None else b64decode(raw)
        if damaged:
            notes.append(f"{where}: damaged base64, decoded what was readable")
        return data
    if cte == "quoted-printable":
        return decoder.finish(raw)[0] if decoder is not None else binascii.a2b_qp(raw)
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


def flatten(message: Message, linesep: str) -> bytes:
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
    out = [wire_bytes(f"{name}: {value}") + nl for name, value in message.raw_items()]
    out.append(nl)
    payload = message._payload
    if isinstance(payload, list):
        boundary = wire_bytes(param_of(message, "boundary") or "")
        for part in payload:
            if isinstance(part, Message):
                out += [b"--", boundary, nl, flatten(part, linesep), nl]
        out += [b"--", boundary, b"--", nl]
    elif payload is not None:
        out.append(wire_bytes(payload))
    return b"".join(out)
