"""Words of mail text: normalising, stop words and Snowball stems. Pure, no database.

One vocabulary for the knowledge base (matching articles), the report (its topics) and
search (ё and е as one letter): lowercase, ё → е, stop words dropped, each word stemmed by
the Snowball stemmer of its script (Cyrillic: Russian, Latin: English), so "счёт", "счета",
"счетов" and "счету" are one term, and so are "reset" and "resetting". Search indexes every
word's stem, stop words too (`stems_of`): a query's words must all occur, whatever they are.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

__all__ = [
    "STOP_WORDS", "URL", "WORD", "fold_yo", "message_stems", "normalise", "stem", "stems_of",
    "terms", "words",
]  # fmt: skip

# How much of a message search indexes (store/stems.py keeps its stems in two columns):
# PostgreSQL refuses a tsvector over 1 MB.
INDEXED_SUBJECT_CHARS = 1000
INDEXED_TEXT_CHARS = 100_000


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Small lists of our own: function words, and the greetings and thanks every support mail has,
# which say nothing about the problem.
_STOP_EN = _wordlist(
    """
    a about above after again all also am an and any are as at be because been before being
    below between both but by can cannot could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my no nor not now of off on once only or other our ours out over own same she
    should so some such than that the their theirs them then there these they this those through
    to too under until up very was we were what when where which while who whom why will with
    would you your yours yourself get got can't don't doesn't didn't isn't i'm i've it's
    hello hi hey dear thanks thank thx regards best kind sincerely cheers please pls team
    support help question problem issue ask asking hope wish would like good morning afternoon
    evening day regard
    """
)
_STOP_RU = _wordlist(
    """
    а без более бы был была были было быть в вам вас весь во вот все всего всех вы где да даже
    для до его ее ей если есть еще же за здесь и из или им их к как какой какая какие ко когда
    кто ли либо мне мной мы на над надо наш наша наши не него нее нет ни них но ну о об однако
    он она они оно от очень по под при с со так также такой там те тем то того тоже той только
    том ты у уже хотя чего чей чем что чтобы чье эта эти это этот я мой моя мое мои меня мы нам
    нас свой своя свое свои себя себе который которая которое которые которых можно нужно
    может могу можете ли бы вот это
    здравствуйте здравствуй привет добрый доброе добрым день дня утро вечер уважаемые уважаемый
    спасибо благодарю заранее пожалуйста подскажите помогите помощь вопрос проблема проблемой
    проблему с уважением уважением всего доброго хорошего команда поддержка поддержки
    """
)
STOP_WORDS = _STOP_EN | _STOP_RU
# A word: letters and digits, with one apostrophe inside ("don't"), as `normalise` writes it.
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# Links and addresses: "example", "com" and the like say nothing about the problem.
URL = re.compile(r"\b(?:https?://|mailto:|www\.)\S+|[^\s@<>()]+@[^\s@<>()]+", re.IGNORECASE)
# What search takes for a word: letters and digits only, as both databases' tokenizers split.
SEARCH_WORD = re.compile(r"[^\W_]+")
# Longer "words" are codes, hashes, base64: stemming says nothing of them, and each would be
# one more entry in the stem cache.
STEM_MAX_CHARS = 40
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[a-z]")
_YO = str.maketrans("Ёё", "Ее")
_stemmers = threading.local()  # Snowball stemmer objects keep state between calls


def fold_yo(text: str) -> str:
    """ё and е as one letter, case kept, as most Russian writers treat them."""
    return text.translate(_YO)


def normalise(text: str) -> str:
    """Lowercase, ё as е, a typographic apostrophe as a plain one."""
    return fold_yo(text.lower()).replace("\u2019", "'")


def words(text: str) -> list[str]:
    """The text's words that can mean something: normalised, no stop words, no URLs."""
    return [
        word
        for word in WORD.findall(normalise(URL.sub(" ", text)))
        if len(word) > 1 and word not in STOP_WORDS and not word.isdigit()
    ]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball stem of one normalised word, by its script (mixed-language mail is common)."""
    if _CYRILLIC.search(word):
        language = "russian"
    elif _LATIN.search(word):
        language = "english"
    else:
        return word
    stemmers = getattr(_stemmers, "by_language", None)
    if stemmers is None:
        stemmers = _stemmers.by_language = {}
    stemmer = stemmers.get(language)
    if stemmer is None:
        import snowballstemmer  # ~20 ms: only when words are actually stemmed

        stemmer = stemmers[language] = snowballstemmer.stemmer(language)
    return str(stemmer.stemWord(word)).replace("ё", "е")


def terms(text: str) -> list[str]:
    """The stems of the text's words, in order, repeats kept."""
    return [stem(word) for word in words(text)]


def stems_of(text: str) -> str:
    """Every word of the text (letters and digits) as its stem, space-separated, in order: what
    search indexes of a message and looks a query's word up as. Stop words are kept."""
    return " ".join(
        stem(word) if len(word) <= STEM_MAX_CHARS else word
        for word in SEARCH_WORD.findall(normalise(text))
    )


def message_stems(subject: str, text: str) -> tuple[str, str]:
    """The stems search indexes for a message's subject and text."""
    return stems_of(subject[:INDEXED_SUBJECT_CHARS]), stems_of(text[:INDEXED_TEXT_CHARS])
