"""The knowledge base: FAQ articles as Markdown files, searched with BM25 over stemmed words.

An article is `KB_DIR/<slug>.md`: a front matter block (`title:`, `keywords:`, `language:`
lines between `---` lines, see kb/README.md) and a Markdown body. The slug is the article's
ID (`mailsupport kb show SLUG`, `reply N --kb SLUG`).

The whole base is small (tens to a few hundred articles), so it is read and indexed in memory
and kept until a file in the folder changes: a long-running daemon picks up edits by itself.

Matching: the stemmed words of `mailsupport.words` (lowercase, ё → е, stop words dropped,
Snowball stems by script), so "счёт", "счета", "счетов" and "счету" are one term, and so are
"reset" and "resetting". Scoring is BM25 over three fields weighted
keywords > title > body; `KnowledgeBase.score` explains the score, `suggest` the bar an
article must clear to be offered to a customer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailsupport.errors import ConfigError, NotFoundError
from mailsupport.markdowntext import plain_text
from mailsupport.words import normalise, stem, terms, words

if TYPE_CHECKING:
    from mailsupport.config import Settings

log = logging.getLogger(__name__)

LANGUAGES = ("en", "ru")
FIELDS = ("title", "keywords", "language")
SETTING = "MAILSUPPORT_KB_DIR"
# Only the normalised score is compared with this: see `suggest` for why it is stable.
DEFAULT_THRESHOLD = 0.3
DEFAULT_SUGGESTIONS = 3
MAX_ARTICLE_BYTES = 1024 * 1024  # a stray log file in the folder must not be indexed
# The article ID is typed by agents (`reply N --kb SLUG`) and used in URLs: keep it plain.
_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]*")
_FIELD_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\s*:(.*)")


class KbError(ConfigError):
    """A knowledge-base file that cannot be used; the message names the file and line."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path} line {line}" if line else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Article:
    slug: str
    title: str
    keywords: tuple[str, ...]
    language: str  # "en", "ru", or "" for an article that serves every language
    body: str  # Markdown, as written
    path: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "language": self.language or None,
            "title": self.title,
            "keywords": list(self.keywords),
            "path": str(self.path),
        }


@dataclass(frozen=True, slots=True)
class ScoredArticle:
    """An article found for a text, with how well it matches."""

    article: Article
    score: float  # 0..1, comparable across texts and bases (see KnowledgeBase.score)
    matched: tuple[str, ...]  # the text's words that matched (lowercased)
    key_matches: int  # how many of them are in the article's keywords or title

    def as_json(self) -> dict[str, Any]:
        return self.article.as_json() | {"score": round(self.score, 3), "matched": self.matched}


# ------------------------------------------------------------------------------------------
# Reading article files
# ------------------------------------------------------------------------------------------


def parse_article(path: Path) -> Article:
    """Read one article file, strictly: any problem is a KbError naming the file and line."""
    slug = path.name.removesuffix(".md")
    if not _SLUG.fullmatch(slug):
        raise KbError(
            path,
            None,
            "the file name is the article ID: use lowercase Latin letters, digits, '-' and '_'"
            " (like password-reset.md)",
        )
    try:
        if path.stat().st_size > MAX_ARTICLE_BYTES:
            raise KbError(
                path, None, f"larger than {MAX_ARTICLE_BYTES // 1024} KiB: not an article"
            )
        data = path.read_bytes()
    except OSError as error:
        raise KbError(path, None, f"cannot read: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise KbError(path, line, "not UTF-8 text: save the file as UTF-8") from None
    return parse_article_text(text.removeprefix("\ufeff"), path)


def parse_article_text(text: str, path: Path) -> Article:
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise KbError(
            path, 1, "an article starts with a '---' line, then title: and keywords: lines, '---'"
        )
    closing = next((n for n, line in enumerate(lines[1:], start=2) if line.strip() == "---"), 0)
    if not closing:
        raise KbError(path, 1, "the front matter is never closed: add a '---' line after it")
    values: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(lines[1 : closing - 1], start=2):
        stripped = line.strip()
        if not stripped:
            continue
        match = _FIELD_LINE.fullmatch(stripped)
        if not match:
            raise KbError(path, number, f"expected 'name: value' in the front matter, got {line!r}")
        name, value = match.group(1).lower(), _unquote(match.group(2).strip())
        if name not in FIELDS:
            raise KbError(path, number, f"unknown field {name!r}: use title, keywords, language")
        if name in values:
            raise KbError(path, number, f"{name} given twice (first on line {values[name][1]})")
        values[name] = (value, number)

    title, title_line = values.get("title", ("", closing))
    if not title:
        raise KbError(path, title_line, "the article needs a title: add a 'title: ...' line")
    language, language_line = values.get("language", ("", closing))
    language = language.lower()
    if language not in ("", *LANGUAGES):
        raise KbError(
            path,
            language_line,
            f"language must be en or ru (or left out for every language), got {language!r}",
        )
    raw_keywords = values.get("keywords", ("", closing))[0]
    if raw_keywords.startswith("[") and raw_keywords.endswith("]"):  # YAML habit: [a, b]
        raw_keywords = raw_keywords[1:-1]
    keywords = tuple(k for k in (_unquote(k.strip()) for k in raw_keywords.split(",")) if k)
    body = "\n".join(lines[closing:]).strip("\n")
    if not body.strip():
        raise KbError(path, closing, "no article text after the front matter")
    return Article(
        slug=path.name.removesuffix(".md"),
        title=title,
        keywords=keywords,
        language=language,
        body=body,
        path=path,
    )


def _unquote(value: str) -> str:
    """A YAML habit: in `title: "A: B"` the quotes are not part of the title."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1].strip()
    return value


def _article_files(directory: Path) -> list[Path]:
    """The folder's `*.md` files, minus its README and drafts (names starting with . or _)."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.name.endswith(".md")
        and path.name.lower() != "readme.md"
        and not path.name.startswith((".", "_"))
        and path.is_file()
    )


def _read_directory(directory: Path) -> tuple[list[Article], list[KbError]]:
    if not directory.is_dir():
        raise ConfigError(f"knowledge base folder not found: {directory} (check {SETTING})")
    articles: list[Article] = []
    problems: list[KbError] = []
    for path in _article_files(directory):
        try:
            articles.append(parse_article(path))
        except KbError as error:
            problems.append(error)
    return articles, problems


def check_kb(directory: str | Path) -> list[str]:
    """Every problem in the knowledge base folder, one line each (for `doctor`); [] when fine."""
    try:
        _, problems = _read_directory(Path(directory))
    except ConfigError as error:
        return [str(error)]
    except OSError as error:
        return [f"cannot read the knowledge base folder {directory}: {error.strerror or error}"]
    return [str(problem) for problem in problems]


# ------------------------------------------------------------------------------------------
# Index and scoring
# ------------------------------------------------------------------------------------------

# BM25 per field, summed with these weights. Keywords are what the author says the article is
# about, the title next; a word in the body is weaker evidence. (BM25F proper weighs before
# saturating, which squashes a keyword to barely 1.5 body mentions: too weak for our purpose.)
WEIGHTS = {"keywords": 3.0, "title": 2.0, "body": 1.0}
K1 = 1.2
B = 0.75  # long bodies mention more words by chance
# The normalised score divides by what the article's strongest few terms would score: enough
# to recognise the article, without punishing an author who lists many keywords.
SIGNATURE_TERMS = 4


@dataclass(slots=True)
class _Doc:
    article: Article
    fields: dict[str, Counter[str]]
    body_length: int
    key_terms: frozenset[str]  # terms of keywords and title
    term_weight: dict[str, float] = field(default_factory=dict)  # weighted BM25 of each term
    ideal: float = 0.0


class KnowledgeBase:
    """The articles of one folder and their index. Build with `load_kb`."""

    def __init__(self, directory: Path, articles: Iterable[Article], problems: list[KbError]):
        self.directory = directory
        self.problems = problems  # files that were skipped (lenient load only)
        self.reported = False  # problems logged already (once per change, not per message)
        self._docs = {a.slug: self._doc(a) for a in sorted(articles, key=lambda a: a.slug)}
        self._df: Counter[str] = Counter()
        for doc in self._docs.values():
            self._df.update(self._all_terms(doc))
        lengths = [doc.body_length for doc in self._docs.values()]
        average = (sum(lengths) / len(lengths)) if lengths else 1.0
        for doc in self._docs.values():
            self._weigh(doc, max(average, 1.0))

    @property
    def articles(self) -> list[Article]:
        return [doc.article for doc in self._docs.values()]

    def get(self, slug: str) -> Article | None:
        doc = self._docs.get(slug.strip().lower().removesuffix(".md"))
        return doc.article if doc else None

    def __len__(self) -> int:
        return len(self._docs)

    @staticmethod
    def _doc(article: Article) -> _Doc:
        fields = {
            "keywords": Counter(terms(" , ".join(article.keywords))),
            "title": Counter(terms(article.title)),
            "body": Counter(terms(plain_text(article.body))),
        }
        return _Doc(
            article=article,
            fields=fields,
            body_length=sum(fields["body"].values()),
            key_terms=frozenset(fields["keywords"]) | frozenset(fields["title"]),
        )

    @staticmethod
    def _all_terms(doc: _Doc) -> set[str]:
        return set().union(*(counter.keys() for counter in doc.fields.values()))

    def idf(self, term: str) -> float:
        return self._idf(self._df.get(term, 0))

    def _idf(self, df: int) -> float:
        # BM25's idf with +1 inside the log (as Lucene): never negative, even in a tiny base
        # where a term is in every article.
        return math.log(1.0 + (len(self._docs) - df + 0.5) / (df + 0.5))

    def _weigh(self, doc: _Doc, average_body: float) -> None:
        # Length normalisation only for the body: titles and keyword lists are short anyway.
        norms = {
            "keywords": 1.0,
            "title": 1.0,
            "body": 1.0 - B + B * doc.body_length / average_body,
        }
        for term in self._all_terms(doc):
            weight = 0.0
            for name, counter in doc.fields.items():
                tf = counter[term]
                if tf:
                    weight += WEIGHTS[name] * tf * (K1 + 1) / (tf + K1 * norms[name])
            doc.term_weight[term] = self.idf(term) * weight
        strongest = sorted((doc.term_weight[t] for t in doc.key_terms), reverse=True) or sorted(
            doc.term_weight.values(), reverse=True
        )
        doc.ideal = sum(strongest[:SIGNATURE_TERMS])

    def score(self, text: str, language: str | None = None) -> list[ScoredArticle]:
        """Every article sharing a term with `text`, best first.

        A raw BM25 sum grows with the size of the base (idf), with the article's wording and
        with the length of the text, so a fixed bar on it would mean different things in
        different desks. The score is instead the geometric mean of two shares, each 0..1:

        - coverage: the raw sum over the article's `ideal` (what a text naming its strongest
          SIGNATURE_TERMS terms would get): how much of what the article is about the text
          mentions;
        - focus: the idf-weighted share of the text's distinct terms that the article has:
          how much of the text is about the article. A long message on another subject that
          happens to say "password" once has a high coverage of the password article and a
          low focus. Terms the base has never seen count as the rarest known ones.
        """
        found: dict[str, list[str]] = {}  # stem -> the words the text had for it
        for word in words(text):
            found.setdefault(stem(word), []).append(word)
        unknown = self._idf(1)
        text_weight = sum(self.idf(t) if t in self._df else unknown for t in found)
        results = []
        for doc in self._docs.values():
            if language and doc.article.language not in ("", language):
                continue
            hits = [t for t in found if t in doc.term_weight]
            if not hits or not doc.ideal:
                continue
            coverage = min(1.0, sum(doc.term_weight[t] for t in hits) / doc.ideal)
            focus = min(1.0, sum(self.idf(t) for t in hits) / text_weight)
            results.append(
                ScoredArticle(
                    article=doc.article,
                    score=math.sqrt(coverage * focus),
                    matched=tuple(found[t][0] for t in hits),
                    key_matches=sum(1 for t in hits if t in doc.key_terms),
                )
            )
        results.sort(key=lambda r: (-r.score, -r.key_matches, r.article.slug))
        return results


# ------------------------------------------------------------------------------------------
# Loading, with a cache that notices edits
# ------------------------------------------------------------------------------------------

_cache: dict[Path, tuple[tuple[Any, ...], KnowledgeBase]] = {}
_cache_lock = threading.Lock()


def _signature(directory: Path) -> tuple[Any, ...]:
    """Changes when an article is added, removed, renamed or edited. The folder's own mtime
    alone misses an editor that rewrites a file in place, so every file's mtime and size count
    (a stat per file: well under a millisecond for a few hundred articles)."""
    stat = directory.stat()
    files = tuple(
        (path.name, s.st_mtime_ns, s.st_size)
        for path in _article_files(directory)
        for s in (path.stat(),)
    )
    return (stat.st_mtime_ns, files)


def load_kb(directory: str | Path, *, strict: bool = True) -> KnowledgeBase:
    """The knowledge base in `directory`, from the cache while no file in it has changed.

    strict: the first bad file raises its KbError (for the `kb` commands). Otherwise bad files
    are skipped, listed in `.problems` and logged once per change (for intake: one broken
    article must not stop acknowledgements).
    Raises ConfigError when the folder does not exist.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"knowledge base folder not found: {path} (check {SETTING})")
    key = path.resolve()
    try:
        signature = _signature(path)
    except OSError as error:  # a file removed while we looked, a folder we may not read
        raise ConfigError(f"cannot read the knowledge base folder {path}: {error}") from None
    with _cache_lock:
        cached = _cache.get(key)
    if cached and cached[0] == signature:
        kb = cached[1]
    else:
        articles, problems = _read_directory(path)
        kb = KnowledgeBase(path, articles, problems)
        with _cache_lock:
            _cache[key] = (signature, kb)
    if strict and kb.problems:
        raise kb.problems[0]
    if kb.problems and not kb.reported:
        kb.reported = True
        for problem in kb.problems:
            log.warning("knowledge base: skipping %s", problem)
    return kb


# ------------------------------------------------------------------------------------------
# Search and suggestions
# ------------------------------------------------------------------------------------------


def search(
    kb: KnowledgeBase, query: str, *, language: str | None = None, limit: int = 10
) -> list[ScoredArticle]:
    """Articles sharing any term with `query`, best first: for agents, so no relevance bar."""
    return kb.score(query, language)[:limit]


def suggest(
    kb: KnowledgeBase,
    text: str,
    language: str,
    limit: int = DEFAULT_SUGGESTIONS,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[ScoredArticle]:
    """Up to `limit` articles worth offering to a customer who wrote `text`, best first.

    Only articles in `language` (or with no language). An article must clear the normalised
    `threshold` AND share at least two distinct terms with the text, one of them from its
    keywords or title: a single shared word, or words the article only mentions in passing,
    are never enough to mail someone an answer.
    """
    return [found for found in kb.score(text, language) if is_suggestible(found, threshold)][:limit]


def is_suggestible(found: ScoredArticle, threshold: float = DEFAULT_THRESHOLD) -> bool:
    return found.score >= threshold and len(found.matched) >= 2 and found.key_matches >= 1


# ------------------------------------------------------------------------------------------
# The settings side: what intake and `reply --kb` call
# ------------------------------------------------------------------------------------------


def kb_directory(settings: Settings) -> Path:
    """MAILSUPPORT_KB_DIR as a folder; ConfigError when unset or missing."""
    value = str(getattr(settings, "kb_dir", "") or "").strip()
    if not value:
        raise ConfigError(f"no knowledge base: set {SETTING} to the folder of articles")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"knowledge base folder not found: {path} (check {SETTING})")
    return path


def suggestions_for(settings: Settings, text: str, language: str) -> list[ScoredArticle]:
    """Articles for an acknowledgement; [] when there is no knowledge base. Never raises for a
    broken base (intake must go on): bad files are skipped and logged, a missing folder too."""
    if not str(getattr(settings, "kb_dir", "") or "").strip():
        return []
    limit = int(getattr(settings, "kb_suggestions", DEFAULT_SUGGESTIONS))
    if limit <= 0:
        return []
    threshold = float(getattr(settings, "kb_threshold", DEFAULT_THRESHOLD))
    try:
        kb = load_kb(kb_directory(settings), strict=False)
        return suggest(kb, text, language, limit=limit, threshold=threshold)
    except (ConfigError, OSError) as error:
        log.warning("knowledge base not used: %s", error)
    except Exception:  # suggestions are a courtesy: a bug here must not cost the ack or the mail
        log.exception("knowledge base suggestions failed")
    return []


def find_article(settings: Settings, slug: str) -> Article:
    """The article `slug` for `reply N --kb SLUG`. ConfigError (exit 2) when the base is not set
    up or the file is broken, NotFoundError (exit 1) when there is no such article."""
    directory = kb_directory(settings)
    wanted = slug.strip().lower().removesuffix(".md")
    path = directory / f"{wanted}.md"
    if _SLUG.fullmatch(wanted) and path.is_file():
        return parse_article(path)  # strict: an agent must see what is wrong with it
    kb = load_kb(directory, strict=False)
    raise NotFoundError(not_found_message(kb, slug))


def not_found_message(kb: KnowledgeBase, slug: str) -> str:
    import difflib

    wanted = slug.strip().lower()
    ratios = [(difflib.SequenceMatcher(None, wanted, a.slug).ratio(), a.slug) for a in kb.articles]
    # Most similar first; equally similar ones alphabetically (difflib's own order reverses them).
    ratios.sort(key=lambda r: (-r[0], r[1]))
    close = [name for ratio, name in ratios if ratio >= 0.6][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else " (see `mailsupport kb list`)"
    return f"no article {slug!r} in the knowledge base{hint}"


def article_text(article: Article) -> str:
    """The article as plain text for a reply: its title, a blank line, its body."""
    return f"{article.title}\n\n{article_body(article)}".rstrip() + "\n"


def article_body(article: Article) -> str:
    """The article's body as plain text, without a heading that repeats its title (the
    acknowledgement's template shows the title itself)."""
    body = plain_text(article.body)
    first, _, rest = body.partition("\n")
    if normalise(first.strip()) == normalise(article.title.strip()):
        body = rest.lstrip("\n")  # the body repeats the title as its heading
    return body.rstrip() + "\n"
