"""The most frequent problems: recurring words and phrases of subjects and first messages.

`find_topics` explains the method. The words are those of `mailsupport.words`, the knowledge
base's vocabulary, so both fold the same inflections together. Each ticket's words and
phrases are found by `mailsupport.topicterms`, mostly at intake (stored with the ticket):
here they are only counted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from mailsupport.report.facts import DEFAULT_TOP, TicketFacts
from mailsupport.topicterms import (
    FORM,
    FORMS,
    PAIR,
    TEXT_CHARS,
    clean_text,
    encode_body,
    terms_of,
)

__all__ = ["Topic", "clean_text", "find_topics"]

MIN_TOPIC_TICKETS = 2  # a topic must recur
MERGE_JACCARD = 0.6  # candidates sharing this much of their tickets are one topic
CONTAIN_SHARE = 0.8  # a topic this much inside a bigger one with a common word joins it
PHRASE_LABEL_SHARE = 0.5  # a phrase names its topic when it covers this share of it
COMMON_SHARE = 0.5  # in bigger reports, words in more tickets than this say nothing
COMMON_MIN_TICKETS = 20
MAX_CANDIDATES = 400  # enough for any top list; bounds the merging work
# Over more tickets than this, an even sample of this many finds the topics; the biggest
# have their tickets counted over all (see find_topics).
SAMPLE = 50_000


@dataclass(frozen=True, slots=True)
class Topic:
    label: str  # the most readable surface form
    count: int  # tickets
    tickets: frozenset[int]  # ticket numbers
    terms: tuple[str, ...]  # the other words and phrases merged into it


@dataclass(slots=True)
class _Candidate:
    key: tuple[str, ...]  # one stem, or two stems in sorted order
    tickets: set[int]  # of the sample (all of them when there is no sample)
    forms: list[str]  # its forms in each of those, whitespace folded, joined by FORM
    _surface: str | None = None

    @property
    def phrase(self) -> bool:
        return len(self.key) == 2

    @property
    def surface(self) -> str:
        """The most common original form; ties to the shorter, then by text."""
        if self._surface is None:
            counts = Counter(FORM.join(self.forms).split(FORM))
            self._surface = min(counts, key=lambda s: (-counts[s], len(s), s))
        return self._surface

    def order(self) -> tuple[int, int, int, str]:
        # Among equals, words written side by side ("личный кабинет") read better than a
        # pair with words between them ("войти в личном").
        surface = self.surface
        return (-len(self.tickets), 0 if self.phrase else 1, len(surface.split()), surface)


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


def _worked_out(t: TicketFacts) -> str:
    """The keys and forms lines (`topicterms.encode_body`) of a ticket without stored terms
    (a conversation we opened, terms of another version): from its subject and first
    message, as intake finds them."""
    return encode_body(terms_of(f"{t.subject}\n{clean_text(t.text[:TEXT_CHARS])}"))


def _count_keys(bodies: Sequence[tuple[int, str]]) -> Counter[str]:
    """How many tickets each key is in: no sets, no forms (a year of a big desk is millions
    of keys), a few big updates (each call costs more than counting a ticket's keys)."""
    counts: Counter[str] = Counter()
    for start in range(0, len(bodies), _CHUNK):
        chunk = bodies[start : start + _CHUNK]
        counts.update(" ".join(stored.partition("\n")[0] for _, stored in chunk).split())
    return counts


def _contenders(counts: Counter[str], min_tickets: int, ceiling: float) -> set[str]:
    """The keys in [min_tickets, ceiling] tickets that can be among the MAX_CANDIDATES first:
    those counted at least as often as the MAX_CANDIDATES-th (ties included: the order among
    equal counts needs their forms)."""
    eligible = {key: n for key, n in counts.items() if min_tickets <= n <= ceiling}
    if len(eligible) > MAX_CANDIDATES:
        cut = sorted(eligible.values(), reverse=True)[MAX_CANDIDATES - 1]
        return {key for key, n in eligible.items() if n >= cut}
    return set(eligible)


def _gather(
    bodies: Sequence[tuple[int, str]], wanted: set[str]
) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """For each wanted key, the tickets it is in and its forms in each."""
    where: dict[str, list[int]] = {key: [] for key in wanted}
    forms: dict[str, list[str]] = {key: [] for key in wanted}
    # The inner loop runs once for each of these keys in each ticket (millions of times in
    # a year of a big desk): bound methods save the attribute lookups.
    add_ticket = {key: numbers.append for key, numbers in where.items()}
    add_forms = {key: written.append for key, written in forms.items()}
    for number, stored in bodies:
        line, _, written = stored.partition("\n")
        keys = line.split()
        found = wanted.intersection(keys)
        if not found:
            continue
        split, index = written.split(FORMS), keys.index
        for key in found:
            add_ticket[key](number)
            add_forms[key](split[index(key)])
    return where, forms


_CHUNK = 4096  # tickets whose keys are counted at a time


def _count_groups(
    bodies: Sequence[tuple[int, str]], groups: Sequence[Sequence[_Candidate]]
) -> list[set[int]]:
    """The tickets of each group of candidates: those with any of its keys."""
    found: list[set[int]] = [set() for _ in groups]
    add = {PAIR.join(m.key): found[i].add for i, members in enumerate(groups) for m in members}
    wanted = set(add)
    for number, stored in bodies:
        for key in wanted.intersection(stored.partition("\n")[0].split()):
            add[key](number)
    return found


def _grouped(ordered: Sequence[_Candidate]) -> list[tuple[list[_Candidate], set[int]]]:
    """Candidates as topics: each joins the group it overlaps most (Jaccard), else starts
    one; then narrower groups join the wider ones they lie in."""
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
    return _absorb_narrower(groups)


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

    Over more than SAMPLE tickets (a year of a big desk), steps 1 to 4 work on an even sample
    of about SAMPLE of them (every n-th ticket); then the 2 * `top` biggest topics of the
    sample have their tickets (their members' union) counted over every ticket, and are
    ranked by those. Up to SAMPLE tickets nothing is sampled.
    """
    bodies = [(t.number, t.terms if t.terms is not None else _worked_out(t)) for t in tickets]
    bodies.sort()  # by number (unique): the sample is the same in whatever order they came
    step = max(1, -(-len(bodies) // SAMPLE))  # 1: no sample, every ticket
    sample = bodies[::step]
    ceiling = len(sample) * COMMON_SHARE if len(sample) >= COMMON_MIN_TICKETS else math.inf
    contenders = _contenders(_count_keys(sample), min_tickets, ceiling)
    where, forms = _gather(sample, contenders)
    candidates = [
        _Candidate(tuple(key.split(PAIR)), set(where[key]), forms[key]) for key in contenders
    ]
    del where, forms
    groups = _grouped(sorted(candidates, key=_Candidate.order)[:MAX_CANDIDATES])
    if step > 1:  # the biggest, counted over every ticket
        groups = sorted(groups, key=lambda group: -len(group[1]))[: 2 * top]
        counted = _count_groups(bodies, [members for members, _ in groups])
    else:
        counted = [numbers for _, numbers in groups]

    topics = []
    for (members, numbers), tickets_of in zip(groups, counted, strict=True):
        phrases = sorted((m for m in members if m.phrase), key=_Candidate.order)
        name = members[0]
        if phrases and len(phrases[0].tickets) >= PHRASE_LABEL_SHARE * len(numbers):
            name = phrases[0]
        label = name.surface
        terms = tuple(dict.fromkeys(m.surface for m in members if m.surface != label))
        topics.append(Topic(label, len(tickets_of), frozenset(tickets_of), terms[:5]))
    topics.sort(key=lambda t: (-t.count, t.label))
    return topics[:top]
