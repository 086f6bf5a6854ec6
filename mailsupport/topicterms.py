"""A ticket's topic terms: the words and phrases the report counts to find frequent problems.

The report's topics (report/topics.py) count, over a range's tickets, the stems and stem
pairs of each ticket's subject and first incoming message. Working them out takes about
a tenth of a millisecond a ticket, which over a year of a big desk (hundreds of thousands of
tickets) was most of a two-minute report. So intake works them out once, when a ticket's
first incoming message is filed (store: `tickets.topic_terms`; migration 0019 for those
stored before), and the report only counts; a ticket without them (a conversation we opened,
terms of an older VERSION) has them worked out at report time from its text, the same way.

Stored as text (`encode`): the first line is `VERSION` and the time of the
message the terms come from (a later-filed message written earlier takes its place), the
second the keys, the third each key's written forms. A change to how terms are found must
raise VERSION: stored terms of another version are worked out again by the report.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from functools import lru_cache

from mailsupport.words import URL, WORD, normalise, stem, words

__all__ = [
    "TEXT_CHARS",
    "VERSION",
    "Terms",
    "clean_text",
    "dated",
    "encode",
    "encode_body",
    "found_at",
    "terms_of",
    "text_terms",
    "ticket_terms",
    "ticket_terms_body",
]

VERSION = "t1"
TEXT_CHARS = 2000  # of the first message: the problem is stated at the top
PAIR = "+"  # joins the two stems of a phrase's key (never in a word)
FORMS = "\x1f"  # between the forms of two keys
FORM = "\x1e"  # between two forms of one key (both are whitespace: never inside a form)

# Phrases never run across punctuation or lines.
_BOUNDARY = re.compile(r"[\r\n.!?;:,()\[\]{}<>\"«»„“”|/\\]+")
# Kept in front of a phrase when shown ("не приходит счёт"), though never matched on.
NEGATIONS = frozenset(
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

# Stems (1-tuples) and stem pairs (sorted 2-tuples), each with the forms it was written in.
Terms = dict[tuple[str, ...], list[str]]


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
    if token in NEGATIONS or len(found) != 1 or len(found[0]) < 3 or found[0].isdigit():
        return None
    stemmed = stem(found[0])
    return None if stemmed in _generic_stems() else stemmed


def terms_of(text: str) -> Terms:
    """Stems (as 1-tuples) and stem pairs (adjacent once stop words are left out, sorted)
    of a text, each with the forms it was written in."""
    found: Terms = defaultdict(list)
    for segment in _BOUNDARY.split(text.lower().replace("’", "'")):
        previous, previous_at = "", 0  # the last kept stem, where its written form starts
        before, before_at = "", 0  # the word just before the current one, kept or not
        for match in WORD.finditer(segment):  # the ’ became ' above, as WORD wants
            word = match.group()
            stemmed = _term(word)
            if stemmed is not None:
                found[(stemmed,)].append(word)
                # "не приходит" reads very differently from "приходит": show the negation
                start = before_at if before in NEGATIONS else match.start()
                if previous and previous != stemmed:
                    key = (previous, stemmed) if previous < stemmed else (stemmed, previous)
                    found[key].append(segment[previous_at : match.end()])
                previous, previous_at = stemmed, start
            before, before_at = word, match.start()
    return found


def encode_body(found: Terms) -> str:
    """The keys line and the forms line of stored terms (see `encode`)."""
    keys = " ".join(PAIR.join(key) for key in found)
    # A form is shown with its whitespace folded, so it is stored that way (which also
    # keeps the separators, themselves whitespace, out of it); NUL never reaches a database.
    forms = FORMS.join(
        FORM.join(" ".join(form.replace("\0", "").split()) for form in written)
        for written in found.values()
    )
    return f"{keys}\n{forms}"


def encode(found: Terms, at: datetime) -> str:
    """Terms as stored; `at` is when the message they come from was written."""
    return dated(encode_body(found), at)


def text_terms(text: str) -> Terms:
    """The terms of a first message's text: what a parse worker works out beside the parse,
    so that the process storing the message has only the subject's to find."""
    return dict(terms_of(clean_text(text[:TEXT_CHARS])))


def ticket_terms(subject: str, text: str, at: datetime, in_text: Terms | None = None) -> str:
    """The stored terms of a ticket with this subject whose first incoming message, written
    at `at`, has this text (whose terms are `in_text` when known already)."""
    return dated(ticket_terms_body(subject, text, in_text), at)


def ticket_terms_body(subject: str, text: str, in_text: Terms | None = None) -> str:
    """ticket_terms() but its first line (what a parse worker can work out ahead).

    They are those of the subject and the text joined by a line break: as no phrase runs
    across a line, the subject's terms, then the text's (a key in both: the subject's forms
    first)."""
    found = terms_of(subject)
    for key, forms in (text_terms(text) if in_text is None else in_text).items():
        found[key].extend(forms)  # a new list for a new key: `in_text` is left as it was
    return encode_body(found)


def dated(body: str, at: datetime) -> str:
    """Stored terms of `body` (encode_body) from a message written at `at`."""
    return f"{VERSION} {at.astimezone(UTC).isoformat()}\n{body}"


def found_at(stored: str | None) -> datetime | None:
    """When the message that stored terms come from was written (None: no terms)."""
    if not stored:
        return None
    head = stored.partition("\n")[0]
    try:
        return datetime.fromisoformat(head.partition(" ")[2])
    except ValueError:
        return None
