"""Raw bytes -> the stdlib's tree of `email.message.Message` parts, bounded.

The parser's message class refuses, with PermanentError, mail built to make parsing slow
(parts nested too deep, too many parts, huge header sections or parameter lists) before the
slow part starts, and survives parameters the stdlib cannot split. The bytes are fed to the
stdlib parser a slice at a time to keep memory down.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesFeedParser
from email.policy import compat32
from typing import Any

from mailsupport.errors import PermanentError

MAX_MIME_DEPTH = 100  # real mail nests under 10 levels (Postfix's mime_nesting_limit)
MAX_MIME_PARTS = 1000  # real mail has tens
MAX_HEADER_SECTION = 128 * 1024  # characters of headers in one part; real mail: under 64 KiB
MAX_PARAM_HEADER = 8 * 1024  # one Content-Type or Content-Disposition value
MAX_PARAMS = 100  # ';' in one Content-Type or Content-Disposition value

_PARAM = re.compile(r';\s*([^=\s;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)')


def crude_params(value: str) -> list[tuple[str, str]]:
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
            return failobj if value is None else crude_params(str(value))


_FEED_SLICE = 1 << 20


def stdlib_parse(raw: bytes, parser: BytesFeedParser | None = None) -> Message:
    """The stdlib's parse, fed a megabyte at a time. Parsing the whole at once (as
    `message_from_bytes` does) holds it as one decoded copy besides the lines of its parts:
    a 25 MB message peaked about 115 MB higher. Incremental feeding is what the stdlib's
    FeedParser is made for; the result is the same. `parser`: one made with a factory of
    _TolerantMessage's kind (`streaming`)."""
    if parser is None:
        parser = BytesFeedParser(_factory=_TolerantMessage)
    for start in range(0, len(raw), _FEED_SLICE):
        parser.feed(raw[start : start + _FEED_SLICE])
    message = parser.close()
    assert isinstance(message, _TolerantMessage)
    return message
