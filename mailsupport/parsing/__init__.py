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
multiprocessing machinery.
"""

from mailsupport.parsing.addresses import MAX_ADDRESSES
from mailsupport.parsing.charsets import decode_bytes, lookup_charset
from mailsupport.parsing.filenames import safe_filename
from mailsupport.parsing.headers import decode_header_value
from mailsupport.parsing.message import parse
from mailsupport.parsing.mimetree import (
    MAX_HEADER_SECTION,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    MAX_PARAM_HEADER,
    MAX_PARAMS,
)
from mailsupport.parsing.msgids import MAX_MSGID_LENGTH, normalize_msgid, parse_msgid_list

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
