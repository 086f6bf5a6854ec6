"""Large messages: base64 and quoted-printable parts decoded as the parser reads them.

The stdlib's FeedParser keeps every line of a leaf part in a list, joins them into one
string when the part ends, and leaves decoding to its caller, which turns that string into
bytes and decodes them: a 25 MB attachment was in memory as lines, as a string and as
bytes, beside its decoded content. Here the same parser reads its lines from a line buffer
that hands the body lines of a base64 or quoted-printable leaf to a decoder instead, a
chunk at a time, and passes on only the part's last line, which the parser keeps as the
part's payload and trims before a boundary as it always does. `parts.leaf_bytes` finishes
the decoder with that payload. The content is held once, decoded.

The result is byte for byte what decoding the joined payload gives, damage flag included
(`headers.b64decode` reads damaged base64 run by run between pads, which a decoder can do
as it goes); `tests/unit/test_parsing_stream.py` compares the two on real-shaped and
broken mail. Parts inside a message/* part are left whole: they are written back as they
came (`parts.flatten`). The parser's line buffer and current part are its internals;
where they are missing (another Python), `stream_parse` parses as `stdlib_parse` does.
"""

from __future__ import annotations

import binascii
import io
from email.feedparser import BufferedSubFile, BytesFeedParser, FeedParser, NeedMoreData
from email.message import Message
from email.policy import compat32
from typing import Any, Protocol

from mailsupport.parsing.headers import _B64_CLEAN, _NOT_B64, wire_bytes
from mailsupport.parsing.mimetree import _TolerantMessage, stdlib_parse
from mailsupport.parsing.parts import transfer_encoding_of

STREAM_FROM = 256 * 1024  # messages at least this large are parsed by stream_parse
_CHUNK = 256 * 1024  # characters of encoded lines decoded at a time


class PartDecoder(Protocol):
    """Decodes a leaf part's body lines as they come; `finish` with its last line."""

    def add(self, line: str) -> None: ...

    def finish(self, tail: bytes) -> tuple[bytes, bool]:
        """The decoded content, and whether the encoding was damaged."""
        ...


class Base64Decoder:
    """`headers.b64decode` of all the lines, a chunk at a time.

    b64decode gives what its damaged path gives whenever the plain decode succeeds: the
    alphabet's characters of each run between pads, decoded on its own (a lone trailing
    character dropped). So the runs are decoded as they come, in groups of four, and what
    decides the flag is counted on the way: characters outside base64 and whitespace,
    alphabet after a pad, and whether the pads complete the last group.
    """

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._lines: list[str] = []
        self._size = 0
        self._carry = b""  # alphabet characters of the open run: fewer than 4
        self._garbage = False  # a character outside the alphabet, '=' and whitespace
        self._padded = False  # a '=' was seen
        self._after_pad = False  # alphabet after a '='
        self._letters = 0
        self._pads = 0
        self._result: tuple[bytes, bool] | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _CHUNK:
            self._decode(wire_bytes("".join(self._lines)))
            self._lines.clear()
            self._size = 0

    def _decode(self, data: bytes) -> None:
        kept = data.translate(None, _NOT_B64)  # the alphabet and '='
        if len(kept) != len(data) and not self._garbage and data.translate(None, _B64_CLEAN):
            self._garbage = True
        pads = kept.count(b"=")
        if pads or self._padded:
            first = 0 if self._padded else kept.find(b"=")
            self._padded = True
            if len(kept) - first - pads > 0:  # every pad is at or after `first`
                self._after_pad = True
        self._letters += len(kept) - pads
        self._pads += pads
        runs = kept.split(b"=")
        run = self._carry + runs[0]
        for following in runs[1:]:
            self._close(run)
            run = following
        whole = len(run) - len(run) % 4
        if whole:
            self._out.write(binascii.a2b_base64(memoryview(run)[:whole]))
        self._carry = run[whole:]

    def _close(self, run: bytes) -> None:
        if len(run) % 4 == 1:
            run = run[:-1]  # a lone trailing character carries no byte
        if run:
            self._out.write(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))

    def finish(self, tail: bytes) -> tuple[bytes, bool]:
        if self._result is None:
            self._decode(wire_bytes("".join(self._lines)) + tail)
            self._lines.clear()
            self._close(self._carry)
            rest = self._letters % 4  # b64decode's plain decode fails on a group left open
            complete = rest == 0 or (rest >= 2 and self._pads >= 4 - rest)
            damaged = self._garbage or self._after_pad or not complete
            self._result = (self._out.getvalue(), damaged)  # getvalue: the buffer, no copy
            self._out = io.BytesIO()
        return self._result


class QuotedPrintableDecoder:
    """`binascii.a2b_qp` of all the lines, a chunk at a time.

    a2b_qp reads nothing across a line feed but for one case: a soft break before a bare CR
    skips to the next line feed. So chunks end only after a line that ends in a line feed.
    """

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._lines: list[str] = []
        self._size = 0
        self._result: tuple[bytes, bool] | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _CHUNK and line.endswith("\n"):
            self._out.write(binascii.a2b_qp(wire_bytes("".join(self._lines))))
            self._lines.clear()
            self._size = 0

    def finish(self, tail: bytes) -> tuple[bytes, bool]:
        if self._result is None:
            self._out.write(binascii.a2b_qp(wire_bytes("".join(self._lines)) + tail))
            self._lines.clear()
            self._result = (self._out.getvalue(), False)
            self._out = io.BytesIO()
        return self._result


class StreamingMessage(_TolerantMessage):
    """A part that knows whether it sits inside a message/* part, and may carry the decoder
    of its body (`decoder`, read by `parts.leaf_bytes`)."""

    def __init__(self, policy: Any = compat32) -> None:
        super().__init__(policy)
        self.in_message = False
        self.decoder: PartDecoder | None = None
        self.decoder_chosen = False

    def attach(self, payload: Any) -> None:
        if isinstance(payload, StreamingMessage):
            payload.in_message = self.in_message or self.get_content_maintype() == "message"
        super().attach(payload)


def _decoder_for(part: StreamingMessage) -> PartDecoder | None:
    if part.in_message or part.get_content_maintype() in ("multipart", "message"):
        return None  # the parser does not read these as one leaf body
    encoding = transfer_encoding_of(part)
    if encoding == "base64":
        return Base64Decoder()
    if encoding == "quoted-printable":
        return QuotedPrintableDecoder()
    return None


class _StreamingLines(BufferedSubFile):
    """The parser's line buffer, handing a streamed part's body lines to its decoder.

    The parser reads a leaf's body right after setting the leaf's headers, with the leaf
    as its current part; so the first line read while the current part has headers and no
    decoder chosen yet is where a body starts. Its lines go to the decoder up to the
    boundary (or the end), all but the last, which the parser gets as the whole body.
    """

    def __init__(self, parser: FeedParser) -> None:
        super().__init__()
        self._parser = parser
        self._decoder: PartDecoder | None = None
        self._held: str | None = None

    def readline(self) -> Any:
        if self._decoder is None:
            part = self._parser._cur  # type: ignore[attr-defined]
            if not isinstance(part, StreamingMessage) or part.decoder_chosen or not len(part):
                return super().readline()
            part.decoder_chosen = True
            part.decoder = self._decoder = _decoder_for(part)
            if self._decoder is None:
                return super().readline()
        return self._drain(self._decoder)

    def _drain(self, decoder: PartDecoder) -> Any:
        held = self._held
        read = super().readline
        while True:
            line = read()
            if line is NeedMoreData:
                self._held = held
                return line
            if not line:  # the boundary or the end: the held line is the body's last
                self._decoder = self._held = None
                return "" if held is None else held
            if held is not None:
                decoder.add(held)
            held = line


def _streaming_parser() -> BytesFeedParser | None:
    parser = BytesFeedParser(_factory=StreamingMessage)
    lines = getattr(parser, "_input", None)
    if type(lines) is not BufferedSubFile or getattr(parser, "_cur", 0) is not None:
        return None  # not the parser this was written against: parse as the stdlib does
    parser._input = _StreamingLines(parser)  # type: ignore[attr-defined]
    return parser


def stream_parse(raw: bytes) -> Message:
    """`mimetree.stdlib_parse`, base64 and quoted-printable leaves decoded as they come."""
    parser = _streaming_parser()
    return stdlib_parse(raw, parser) if parser is not None else stdlib_parse(raw)
