"""Quoted history in mail text: where the copy of earlier mail starts, and folding it away.

Pure functions over text. `compose.quote_text` uses `new_text` to quote only what the customer
wrote this time; `show` uses `fold` to hide the history a reply carries, so a long reply chain
reads like a chat. Both agree on what counts as history: a separator line such as
"-----Original Message-----", Outlook's header block of the copied mail ("From: ..." /
"Sent: ..." / "To: ..." / "Subject: ..."), and "> " quoted lines with the "On ..., Anna
wrote:" line above them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HISTORY_SEPARATOR", "Folded", "fold", "is_quoted", "new_text"]

# Where a mail client starts the copy of earlier mail below the new text.
HISTORY_SEPARATOR = re.compile(
    r"\s*(-{2,}\s*(original message|исходное сообщение|forwarded message|"
    r"пересылаемое сообщение)\s*-*|_{20,})\s*",
    re.IGNORECASE,
)
# "On Mon, 2 Mar 2026, Anna <anna@example.org> wrote:", "02.03.2026 09:20, Иван пишет:": an
# attribution even when the copy below it is not "> " quoted (some clients paste it as is).
ATTRIBUTION = re.compile(
    r".*\b(wrote|writes|пишет|написал|написала|написал\(а\)|писал|писала|schrieb|a écrit|"
    r"escribió)\s*:\s*",
    re.IGNORECASE,
)
# Outlook (and clients copying it) put the earlier mail below a block of its headers, in the
# language of the client: "From:" first, then "Sent:" (or "Date:") and "Subject:" among the
# next few lines.
_OUTLOOK_FROM = re.compile(r"\s*\**(from|от|von|de|da)\s*:\**\s*\S.*", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(
    r"\s*\**(sent|date|отправлено|дата|gesendet|datum|envoyé|enviado|inviato)\s*:\**\s*\S.*",
    re.IGNORECASE,
)
_OUTLOOK_SUBJECT = re.compile(
    r"\s*\**(subject|тема|betreff|objet|asunto|oggetto)\s*:\**.*", re.IGNORECASE
)
OUTLOOK_BLOCK_LINES = 6  # From: and the headers after it, Cc: included

# Inline answers keep the short quotes they answer ("> Which version?" / "3.2"); longer
# quoted blocks inside a message are folded like the trailing one.
KEEP_INLINE_QUOTE_LINES = 3


@dataclass(frozen=True, slots=True)
class Folded:
    """Stands for `lines` lines of quoted history that were left out."""

    lines: int


def is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_lines(lines: list[str], end: int) -> int:
    """How many lines just above lines[end] introduce a quote ("On ..., Anna wrote:"), 0-2.

    A line ending in ":" counts, and the line before it too when the client wrapped the
    attribution before the address ("On Mon, Bob <" / "bob@x.example> wrote:")."""
    if not end or not lines[end - 1].rstrip().endswith(":"):
        return 0
    if end > 1 and lines[end - 2].rstrip().endswith("<"):
        return 2
    return 1


def starts_copied_headers(lines: list[str], i: int) -> bool:
    """Whether lines[i] starts Outlook's block of the copied mail's headers: a "From:" line
    with "Sent:" (or "Date:") and "Subject:" among the next few. Not at the very top: a
    message that begins with it is a forward, all of it the point."""
    if not i or not _OUTLOOK_FROM.fullmatch(lines[i]):
        return False
    block = lines[i + 1 : i + 1 + OUTLOOK_BLOCK_LINES]
    return any(_OUTLOOK_SENT.fullmatch(x) for x in block) and any(
        _OUTLOOK_SUBJECT.fullmatch(x) for x in block
    )


def new_text(lines: list[str]) -> list[str]:
    """The lines the customer wrote this time: without the copy of earlier mail their
    client put below (after a separator or Outlook's header block, or a trailing "> " block
    and its "... wrote:")."""
    for i, line in enumerate(lines):
        if HISTORY_SEPARATOR.fullmatch(line) or starts_copied_headers(lines, i):
            lines = lines[:i]
            break
    end = len(lines)
    while end and (not lines[end - 1].strip() or is_quoted(lines[end - 1])):
        end -= 1
    if any(is_quoted(line) for line in lines[end:]):
        lines = lines[: end - _attribution_lines(lines, end)]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


def fold(text: str) -> list[str | Folded]:
    """`text` as lines, each stretch of quoted history replaced by one `Folded`.

    Folded: everything from a separator line ("-----Original Message-----"), from Outlook's
    block of the copied mail's headers ("From:" / "Sent:" / "Subject:"), or from an
    attribution followed by an unquoted copy ("Иван пишет:" and the old text as it was) to
    the end; and each block of "> " lines with the attribution above it, except short
    blocks that inline answers reply to. A message that would be all history is kept whole:
    then the quote is what it says."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    tail = _history_tail(lines)
    body, hidden_tail = lines[:tail], lines[tail:]
    out: list[str | Folded] = []
    i = 0
    while i < len(body):
        if not is_quoted(body[i]):
            out.append(body[i])
            i += 1
            continue
        end = i  # the quoted block: "> " lines and the blank lines between them
        while end < len(body) and (is_quoted(body[end]) or _blank_inside(body, end)):
            end += 1
        trailing = not any(line.strip() for line in body[end:])
        if not trailing and end - i <= KEEP_INLINE_QUOTE_LINES:
            out.extend(body[i:end])
        else:
            above = _attribution_above(out)
            hidden = [str(x) for x in out[len(out) - above :]] + body[i:end]
            del out[len(out) - above :]
            out.append(Folded(_count(hidden)))
        i = end
    if any(line.strip() for line in hidden_tail):
        out.append(Folded(_count(hidden_tail)))
    out = _tidy(out)
    if not any(isinstance(x, str) and x.strip() for x in out):
        return _tidy(list(lines))
    return out


def _history_tail(lines: list[str]) -> int:
    """Where the unquoted copy of earlier mail starts (len(lines) when there is none)."""
    for i, line in enumerate(lines):
        if HISTORY_SEPARATOR.fullmatch(line) or starts_copied_headers(lines, i):
            return i
        if ATTRIBUTION.fullmatch(line):
            following = next((x for x in lines[i + 1 :] if x.strip()), None)
            if following is not None and not is_quoted(following):
                return i - (1 if i and lines[i - 1].rstrip().endswith("<") else 0)
    return len(lines)


def _blank_inside(lines: list[str], i: int) -> bool:
    """A blank line between two quoted lines belongs to the quote."""
    if lines[i].strip():
        return False
    following = next((x for x in lines[i + 1 :] if x.strip()), None)
    return following is not None and is_quoted(following)


def _attribution_above(out: list[str | Folded]) -> int:
    """How many of the last lines of `out` are the attribution of the quote that follows,
    with at most one blank line between them and the quote."""
    texts: list[str] = []
    for item in reversed(out[-3:]):
        if not isinstance(item, str):
            break
        texts.insert(0, item)
    gap = 1 if texts and not texts[-1].strip() else 0
    found = _attribution_lines(texts[: len(texts) - gap], len(texts) - gap)
    return found + gap if found else 0


def _count(lines: list[str]) -> int:
    """Lines shown as hidden: without blank lines at either end."""
    kept = [i for i, line in enumerate(lines) if line.strip()]
    return kept[-1] - kept[0] + 1 if kept else 0


def _tidy(items: list[str | Folded]) -> list[str | Folded]:
    """No blank lines at either end nor two in a row; neighbouring folds become one."""
    out: list[str | Folded] = []
    for item in items:
        if isinstance(item, Folded):
            while out and out[-1] == "":
                out.pop()
            if out and isinstance(previous := out[-1], Folded):
                out.pop()
                item = Folded(previous.lines + item.lines)
                while out and out[-1] == "":
                    out.pop()
                if out:
                    out.append("")
            elif out:
                out.append("")
            out.append(item)
            continue
        if not item.strip():
            if out and out[-1] != "":
                out.append("")
            continue
        out.append(item)
    while out and out[-1] == "":
        out.pop()
    return out
