"""Message-IDs read from Message-ID, In-Reply-To and References as real clients write them.

IDs are kept without angle brackets; comments, quoted phrases, commas and missing brackets
are tolerated, and an absurdly long ID becomes a stable hash so that it still threads.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

MAX_MSGID_LENGTH = 250
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


def bare_content_id(value: str) -> str | None:
    """A Content-ID header value without angle brackets, spaces or controls, or None."""
    text = value.strip()
    if "<" in text:
        text = text[text.find("<") + 1 :].split(">", 1)[0]
    return _ID_JUNK.sub("", text) or None
