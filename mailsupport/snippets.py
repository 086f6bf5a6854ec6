"""The snippet a search shows of a message: some words of its text around the matches, the
matches marked. Pure: the same on every backend, since neither database's own snippet
function (FTS5's snippet(), PostgreSQL's ts_headline) knows the Snowball stems search
matches by.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mailsupport.words import SEARCH_WORD, STEM_MAX_CHARS, normalise, stem

SNIPPET_WORDS = 16  # words shown of a long text
_LEAD = 3  # words shown before the first match, when the text is cut
# Snippets come back with the matches between these; callers choose how to show them.
MARK_START, MARK_END = "\x02", "\x03"


@dataclass(frozen=True, slots=True)
class Phrase:
    """Words that match only together and exactly (normalised); the last may go on."""

    words: tuple[str, ...]
    prefix: bool = False


def make_snippet(text: str, stems: Collection[str], phrases: Sequence[Phrase]) -> str:
    """The text, or SNIPPET_WORDS of its words with … where it was cut, with every word
    whose stem is one of `stems`, and every occurrence of a phrase, between the marks.
    The window starts a little before the part with the most matches; a text without a
    match gives its first words, which say what the message is about."""
    text = text.replace(MARK_START, " ").replace(MARK_END, " ")  # no marks but ours
    found = list(SEARCH_WORD.finditer(text))
    if not found:
        return text
    words = [normalise(m.group()) for m in found]
    marked = sorted(_matching(words, stems) | _in_phrases(words, phrases))
    start = _window(marked, len(words))
    end = min(start + SNIPPET_WORDS, len(words))
    first = 0 if start == 0 else found[start].start()
    last = len(text) if end == len(words) else found[end - 1].end()
    pieces = ["…" if start else ""]
    at = first
    for i in marked:
        if start <= i < end:
            word = found[i]
            pieces += [text[at : word.start()], MARK_START, word.group(), MARK_END]
            at = word.end()
    pieces += [text[at:last], "…" if end < len(words) else ""]
    return "".join(pieces)


def _matching(words: list[str], stems: Collection[str]) -> set[int]:
    if not stems:
        return set()
    # A stem begins with its word's first letter (Snowball only changes endings): most
    # words need no stemming to be told apart.
    initials = {s[0] for s in stems if s}
    return {
        i
        for i, word in enumerate(words)
        if word[0] in initials and (stem(word) if len(word) <= STEM_MAX_CHARS else word) in stems
    }


def _in_phrases(words: list[str], phrases: Sequence[Phrase]) -> set[int]:
    marked: set[int] = set()
    for phrase in phrases:
        n = len(phrase.words)
        if not n:
            continue
        *whole, last = phrase.words
        for i in range(len(words) - n + 1):
            if words[i : i + n - 1] != whole:
                continue
            end = words[i + n - 1]
            if end == last or (phrase.prefix and end.startswith(last)):
                marked.update(range(i, i + n))
    return marked


def _window(marked: list[int], count: int) -> int:
    """The first word shown: a little before the densest run of matches."""
    if count <= SNIPPET_WORDS or not marked:
        return 0
    best, most, j = marked[0], 0, 0
    for n, i in enumerate(marked):
        while j < len(marked) and marked[j] < i + SNIPPET_WORDS:
            j += 1
        if j - n > most:  # the matches among the SNIPPET_WORDS words from the n-th on
            best, most = i, j - n
    return max(0, min(best - _LEAD, count - SNIPPET_WORDS))
