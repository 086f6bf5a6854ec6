"""Raw message bytes -> Inbound: the package's face, re-exporting what other modules use.

mail-parser turns the bytes into a stdlib `email.message.Message` (guarding against
recursion on absurdly nested MIME) and reads the Date header. Everything else is read from
that Message here, because mail-parser's own views do not fit a support desk: it shows the
text of a forwarded message as the outer body, drops message/rfc822 and delivery-status
parts, invents random names for unnamed attachments, falls back to UTF-8 with replacement
characters for any undeclared or mislabelled 8-bit text, and drops raw 8-bit header bytes.

Never raises for damaged mail: damage is described in `Inbound.defects`. Only input that
is not a message at all (empty, no header block, binary), or built to make parsing slow
(nested too deeply, too many parts, huge header sections: see `mimetree`), raises
PermanentError.

The modules, in the order a message meets them: `message` (the whole message and `parse`),
`mimetree` (bytes -> a bounded stdlib tree), `streaming` (the same tree for large messages,
base64 and quoted-printable parts decoded as they are read), `walk` (bodies and
attachments), `parts` (one part's parameters and content), `filenames`, `headers`,
`charsets`, `msgids`, `addresses`, `dates`. `workers` parses in forked processes with a
time limit; it is not imported here, so that importing this package starts no
multiprocessing machinery. Nothing is imported until it is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

# Where each name lives. They are imported when first asked for (PEP 562): a command that
# only reads addresses (every command loads the mailboxes) does not pay for the parser,
# mail-parser and their regular expressions, about a tenth of `list`'s start.
_HOMES = {
    "MAX_ADDRESSES": "addresses",
    "decode_bytes": "charsets",
    "lookup_charset": "charsets",
    "safe_filename": "filenames",
    "decode_header_value": "headers",
    "parse": "message",
    "MAX_HEADER_SECTION": "mimetree",
    "MAX_MIME_DEPTH": "mimetree",
    "MAX_MIME_PARTS": "mimetree",
    "MAX_PARAM_HEADER": "mimetree",
    "MAX_PARAMS": "mimetree",
    "MAX_MSGID_LENGTH": "msgids",
    "normalize_msgid": "msgids",
    "parse_msgid_list": "msgids",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "MAX_ADDRESSES",
    "MAX_HEADER_SECTION",
    "MAX_MIME_DEPTH",
    "MAX_MIME_PARTS",
    "MAX_MSGID_LENGTH",
    "MAX_PARAMS",
    "MAX_PARAM_HEADER",
    "decode_bytes",
    "decode_header_value",
    "lookup_charset",
    "normalize_msgid",
    "parse",
    "parse_msgid_list",
    "safe_filename",
]
