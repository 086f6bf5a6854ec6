"""Attachment file names that are safe to use on disk.

A sender's name is cut to its basename without controls, bidirectional overrides, reserved
characters or a leading dot; a part without a usable name gets `attachment-N` with an
extension that fits its content type.
"""

from __future__ import annotations

import mimetypes
import os
import re
import unicodedata

_FILENAME_MAX = 200
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
