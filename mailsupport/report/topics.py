"""The most frequent problems: recurring words and phrases of subjects and first messages.

`find_topics` explains the method. The words are those of `mailsupport.words`, the knowledge
base's vocabulary, so both fold the same inflections together.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from mailsupport.report.facts import DEFAULT_TOP, TicketFacts
from mailsupport.words import URL, WORD, normalise, stem, words

__all__ = ["Topic", "clean_text", "find_topics"]

MIN_TOPIC_TICKETS = 2  # a topic must recur
MERGE_JACCARD = 0.6  # candidates sharing this much of their tickets are one topic
CONTAIN_SHARE = 0.8  # a topic this much inside a bigger one with a common word joins it
PHRASE_LABEL_SHARE = 0.5  # a phrase names its topic when it covers this share of it
COMMON_SHARE = 0.5  # in bigger reports, words in more tickets than this say nothing
COMMON_MIN_TICKETS = 20
MAX_CANDIDATES = 400  # enough for any top list; bounds the merging work
TEXT_CHARS = 2000  # of the first message: the problem is stated at the top

# Phrases never run across punctuation or lines.
_BOUNDARY = re.compile(r"[\r\n.!?;:,()\[\]{}<>\"«»„“”|/\\]+")
# Kept in front of a phrase when shown ("не приходит счёт"), though never matched on.
_NEGATIONS = frozenset(
    ("не", "нет", "ни", "not", "no", "never", "cannot", "can't", "don't", "doesn't", "didn't")
)
# Words every support mail has, beyond the stop words of mailsupport.words (compared by stem).
_GENERIC = """
    re fw fwd aw work works working need needs want try tried trying use using used know see
    still also anymore today yesterday tomorrow time thing something anything everything ok
    okay yes attached attachment find
    работает работать работают хочу хотел хотела хотим сделать делать пробовал пробовала
    пробовали знаю сейчас сегодня вчера завтра снова опять просто получается никак прошу
    вложении приложении прикладываю
"""
_SIGNATURE = re.compile(r"\s*(--|—|__)\s*")
_SIGN_OFF = re.compile(
    r"\s*(best regards|kind regards|regards|thanks|thank you|many thanks|cheers|sincerely|"
    r"с уважением|спасибо|заранее спасибо|заранее благодарю|благодарю|всего доброго|"
    r"всего хорошего)\b[\s,.!]*(\S+\s*){0,3}",
    re.IGNORECASE,
)
_DEVICE = re.compile(r"\s*(sent from|get outlook|отправлено (с|из))\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Topic:
    label: str  # the most readable surface form
    count: int  # tickets
    tickets: frozenset[int]  # ticket numbers
    terms: tuple[str, ...]  # the other words and phrases merged into it


@dataclass(slots=True)
class _Candidate:
    key: tuple[str, ...]  # one stem, or two stems in sorted order
    tickets: set[int]
    forms: list[str]  # every written form met, repeats included
    _surface: str | None = None

    @property
    def phrase(self) -> bool:
        return len(self.key) == 2

    @property
    def surface(self) -> str:
        """The most common original form; ties to the shorter, then by text."""
        if self._surface is None:
            counts = Counter(" ".join(form.split()) for form in self.forms)
            self._surface = min(counts, key=lambda s: (-counts[s], len(s), s))
        return self._surface

    def order(self) -> tuple[int, int, int, str]:
        # Among equals, words written side by side ("личный кабинет") read better than a
        # pair with words between them ("войти в личном").
        surface = self.surface
        return (-len(self.tickets), 0 if self.phrase else 1, len(surface.split()), surface)


def clean_text(text: str) -> str:
    """The customer's own words: no quoted history, no signature, no links or addresses."""
    from mailsupport.quoting import is_quoted, new_text

    kept: list[str] = []
    for line in new_text(text.splitlines()):
        if _SIGNATURE.fullmatch(line) or _DEVICE.match(line):
            break
        if kept and len(line.strip()) <= 40 and _SIGN_OFF.fullmatch(line):
            break
        if not is_quoted(line):
            kept.append(line)
    return URL.sub(" ", "\n".join(kept))


@lru_cache(maxsize=1)
def _generic_stems() -> frozenset[str]:
    return frozenset(stem(normalise(word)) for word in _GENERIC.split())


@lru_cache(maxsize=65536)
def _term(token: str) -> str | None:
    """The stem a lowercased token counts as, or None for a word that says nothing."""
    found = words(token)  # the knowledge base's vocabulary: its normalising and stop words
    if token in _NEGATIONS or len(found) != 1 or len(found[0]) < 3 or found[0].isdigit():
        return None
    stemmed = stem(found[0])
    return None if stemmed in _generic_stems() else stemmed


def _ticket_terms(text: str) -> dict[tuple[str, ...], list[str]]:
    """Stems (as 1-tuples) and stem pairs (adjacent once stop words are left out, sorted)
    of one ticket's text, each with the forms it was written in."""
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for segment in _BOUNDARY.split(text.lower().replace("’", "'")):
        previous, previous_at = "", 0  # the last kept stem, where its written form starts
        before, before_at = "", 0  # the word just before the current one, kept or not
        for match in WORD.finditer(segment):  # the ’ became ' above, as WORD wants
            word = match.group()
            stemmed = _term(word)
            if stemmed is not None:
                found[(stemmed,)].append(word)
                # "не приходит" reads very differently from "приходит": show the negation
                start = before_at if before in _NEGATIONS else match.start()
                if previous and previous != stemmed:
                    key = (previous, stemmed) if previous < stemmed else (stemmed, previous)
                    found[key].append(segment[previous_at : match.end()])
                previous, previous_at = stemmed, start
            before, before_at = word, match.start()
    return found


def _absorb_narrower(
    groups: list[tuple[list[_Candidate], set[int]]],
) -> list[tuple[list[_Candidate], set[int]]]:
    """Fold each topic that lies mostly inside a bigger one sharing a word into it."""
    ordered = sorted(enumerate(groups), key=lambda g: (-len(g[1][1]), g[0]))
    kept: list[tuple[list[_Candidate], set[int], set[str]]] = []
    for _, (members, numbers) in ordered:
        stems = {stem for m in members for stem in m.key}
        best, best_shared = None, CONTAIN_SHARE * len(numbers)
        for host in kept:
            if not stems & host[2]:
                continue
            shared = len(numbers & host[1])
            if shared >= best_shared and (best is None or shared > best_shared):
                best, best_shared = host, shared
        if best is None:
            kept.append((list(members), set(numbers), stems))
        else:
            best[0].extend(members)
            best[1].update(numbers)
            best[2].update(stems)
    return [(members, numbers) for members, numbers, _ in kept]


def find_topics(
    tickets: Sequence[TicketFacts], top: int = DEFAULT_TOP, min_tickets: int = MIN_TOPIC_TICKETS
) -> list[Topic]:
    """The most frequent problems across the tickets' subjects and first messages.

    1. Each ticket's subject and first message (`clean_text`) are split into words;
       lowercase, ё = е, the knowledge base's stop words and a few generic support words
       left out, every word stemmed (Snowball, Russian or English by script), so
       "счёт", "счета" and "счету" are one term.
    2. Candidates are terms and two-word phrases (neighbours once stop words are out, in
       either order: "не приходит счёт" and "счета не приходят" are one phrase), with the
       tickets they occur in (document frequency). Those in fewer than `min_tickets` tickets
       are dropped, and so, from 20 tickets on, those in more than half of all tickets.
    3. From the most tickets down (at equal counts phrases first, then the fewest written
       words, then by text), a candidate joins the topic whose tickets it shares most, when
       they overlap by Jaccard >= 0.6, else it starts a topic. A topic's tickets are its
       members' union. Then, from the biggest down, a topic with at least 80% of its
       tickets inside a bigger one that shares a word with it joins that one: it is a
       narrower wording ("счёт не пришёл" inside "счёт"), listed among its terms.
    4. A topic is named by its widest phrase when that covers at least half of its tickets,
       else by its first member; a name is the member's most common written form (ties to
       the shorter, then by text). Topics are ranked by tickets, then name.
    """
    where: dict[tuple[str, ...], set[int]] = defaultdict(set)
    forms: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for t in tickets:
        text = f"{t.subject}\n{clean_text(t.text[:TEXT_CHARS])}"
        for key, written in _ticket_terms(text).items():
            where[key].add(t.number)
            forms[key].extend(written)
    ceiling = len(tickets) * COMMON_SHARE if len(tickets) >= COMMON_MIN_TICKETS else math.inf
    ordered = sorted(
        (
            _Candidate(key, numbers, forms[key])
            for key, numbers in where.items()
            if min_tickets <= len(numbers) <= ceiling
        ),
        key=_Candidate.order,
    )[:MAX_CANDIDATES]

    groups: list[tuple[list[_Candidate], set[int]]] = []
    for candidate in ordered:
        best, best_score = None, MERGE_JACCARD
        size = len(candidate.tickets)
        for index, (_, numbers) in enumerate(groups):
            other = len(numbers)
            if min(size, other) < MERGE_JACCARD * max(size, other):
                continue  # cannot reach the threshold: skip the set work
            shared = len(candidate.tickets & numbers)
            score = shared / (size + other - shared)
            if score >= best_score and (best is None or score > best_score):
                best, best_score = index, score
        if best is None:
            groups.append(([candidate], set(candidate.tickets)))
        else:
            groups[best][0].append(candidate)
            groups[best][1].update(candidate.tickets)
    groups = _absorb_narrower(groups)

    topics = []
    for members, numbers in groups:
        phrases = sorted((m for m in members if m.phrase), key=_Candidate.order)
        name = members[0]
        if phrases and len(phrases[0].tickets) >= PHRASE_LABEL_SHARE * len(numbers):
            name = phrases[0]
        label = name.surface
        terms = tuple(dict.fromkeys(m.surface for m in members if m.surface != label))
        topics.append(Topic(label, len(numbers), frozenset(numbers), terms[:5]))
    topics.sort(key=lambda t: (-t.count, t.label))
    return topics[:top]
