"""One pass over a parsed MIME tree: the body texts, the attachments and the damage.

Text and HTML parts that are not attachments become the body (decoded, format=flowed
joined); everything else, forwarded messages included, becomes an attachment with a safe
name; each defect the stdlib found is noted in plain words.
"""

from __future__ import annotations

import binascii
import re
from email.message import Message

from mailsupport.errors import PermanentError
from mailsupport.mail import Attachment
from mailsupport.parsing.charsets import decode_bytes
from mailsupport.parsing.filenames import safe_filename
from mailsupport.parsing.headers import b64decode, clean_header, decode_header_value, header_text
from mailsupport.parsing.mimetree import MAX_MIME_DEPTH
from mailsupport.parsing.parts import (
    charset_label_of,
    content_id_of,
    content_type_of,
    filename_of,
    flatten,
    leaf_bytes,
    meta_charset,
    param_of,
    transfer_encoding_of,
)

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
_TEXT_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # NUL breaks PostgreSQL text


def normalize_text(text: str) -> str:
    """LF line ends, no control characters but tab and line feed, nothing blank at the end."""
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


class MimeWalk:
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
            ctype = content_type_of(part)
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
        data = leaf_bytes(part, self.notes, where)
        filename = filename_of(part)
        is_body = (
            ctype in ("text/plain", "text/html")
            and not in_attachment
            and disposition != "attachment"
            and (part is self.root or not filename)
        )
        if not is_body:
            content_id = content_id_of(part)
            self._attach(
                filename,
                ctype,
                data,
                content_id,
                disposition == "inline" or (disposition is None and content_id is not None),
            )
            return
        label = charset_label_of(part)
        if label is None and ctype == "text/html":
            label = meta_charset(data)
        text, note = decode_bytes(data, label)
        if note:
            self.notes.append(f"{where}: {note}")
        if ctype == "text/html":
            self.html.append(text)
            return
        text = normalize_text(text)
        if str(param_of(part, "format")).lower() == "flowed":
            delsp = str(param_of(part, "delsp")).lower() == "yes"
            text = _unflow(text, delsp)
        self.plain.append(text)

    def _unsplit_multipart(self, part: Message, where: str, in_attachment: bool) -> None:
        """A multipart whose boundary never occurs: its body is all there is; show it."""
        data = leaf_bytes(part, self.notes, where)
        if in_attachment:
            self._attach(None, "text/plain", data, None, False)
            return
        text, _ = decode_bytes(data, None)
        self.notes.append(f"{where}: read as plain text")
        self.plain.append(normalize_text(text))

    def _message_part(self, part: Message, ctype: str) -> None:
        """message/rfc822 and friends: one attachment holding the nested message's bytes."""
        payload = part.get_payload()
        if isinstance(payload, list):
            data = b"".join(flatten(m, self.linesep) for m in payload)
        else:
            data = leaf_bytes(part, self.notes, ctype)
        cte = transfer_encoding_of(part)
        if isinstance(payload, list) and cte in ("base64", "quoted-printable"):
            # Not allowed for message/*, sent anyway: the stdlib parsed the encoded text.
            data = data.lstrip(b"\r\n")
            data = b64decode(data)[0] if cte == "base64" else binascii.a2b_qp(data)
        filename = filename_of(part)
        if not filename and ctype in ("message/rfc822", "message/global") and payload:
            nested = payload[0] if isinstance(payload, list) else None
            subject = nested.get("subject") if nested is not None else None
            if subject:
                filename = clean_header(decode_header_value(header_text(subject))) + ".eml"
        self._attach(filename, ctype, data, content_id_of(part), False)

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
