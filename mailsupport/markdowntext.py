"""Markdown made readable as the plain text of a mail (knowledge-base articles in replies).

Not a Markdown renderer: it takes away the marks that would look like noise in a plain-text
mail (heading hashes, emphasis, link syntax) and keeps everything else as written.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>~|])")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^>\s]+)>", re.IGNORECASE)
_CODE = re.compile(r"`([^`\n]+)`")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_EM_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_EM_UNDERSCORE = re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_STAR_BULLET = re.compile(r"^(\s*)[*+]\s+")


def _link(text: str, url: str) -> str:
    shown = url.removeprefix("mailto:")
    return shown if text.strip() in (url, shown) else f"{text} ({shown})"


def _inline(line: str) -> str:
    # Escaped characters are set aside first so that `\*` stays a star, not emphasis.
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(1))
        return f"\ue000{len(kept) - 1}\ue001"

    line = _ESCAPE.sub(keep, line)
    codes: list[str] = []

    def keep_code(match: re.Match[str]) -> str:  # code is shown as written
        codes.append(match.group(1))
        return f"\ue002{len(codes) - 1}\ue003"

    line = _CODE.sub(keep_code, line)
    line = _IMAGE.sub(lambda m: _link(m.group(1) or "image", m.group(2)), line)
    line = _LINK.sub(lambda m: _link(m.group(1), m.group(2)), line)
    line = _AUTOLINK.sub(lambda m: m.group(1).removeprefix("mailto:"), line)
    line = _STAR_BULLET.sub(r"\1- ", line)  # "* item" would look like emphasis below
    line = _STRONG.sub(r"\2", line)
    line = _STRIKE.sub(r"\1", line)
    line = _EM_STAR.sub(r"\1", line)
    line = _EM_UNDERSCORE.sub(r"\1", line)
    line = re.sub("\ue002(\\d+)\ue003", lambda m: codes[int(m.group(1))], line)
    return re.sub("\ue000(\\d+)\ue001", lambda m: kept[int(m.group(1))], line)


def plain_text(markdown: str) -> str:
    """Markdown made readable as plain mail: no '#' on headings, no emphasis markers, links
    as `text (url)`, code blocks as they are, a '> ' quote indented (in mail it would look like
    the customer's own quoted words)."""
    out: list[str] = []
    in_code = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if in_code:
            out.append(line.rstrip())
            continue
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(1)
        elif _QUOTE.match(line):
            line = "  " + _QUOTE.sub("", line)
        out.append(_inline(line).rstrip())
    text = "\n".join(out).strip("\n")
    return re.sub(r"\n{3,}", "\n\n", text)
