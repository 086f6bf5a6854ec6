"""HTML from mail: readable plain text for agents, and sanitized HTML that is safe to show.

`html_to_text` walks the document with the stdlib `html.parser`, after nh3 has rewritten it
into well-formed markup (see there why). `sanitize_html` uses nh3 (the Rust ammonia sanitizer)
alone, because hand-written HTML sanitizers are where XSS bugs live.
"""

from __future__ import annotations

import re
from html import escape, unescape
from html.parser import HTMLParser

import nh3

__all__ = ["html_to_text", "sanitize_html"]

# Elements whose content is never shown to a reader.
# (Not <head>: broken mail often never closes it, and its visible children are listed here.)
_HIDDEN = frozenset({"script", "style", "title", "template", "xml", "svg", "math"})
# Paragraph-like blocks: separated from their neighbours by a blank line.
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul", "ol", "dl"}
)
# Other blocks: start and end on their own line.
_BLOCKS = frozenset(
    {
        "div", "tr", "li", "dt", "dd", "hr", "section", "article", "header", "footer",
        "address", "center", "nav", "aside", "main", "figure", "figcaption", "fieldset",
        "details", "summary", "form", "caption", "tbody", "thead", "tfoot",
    }
)  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "wbr"})
# URL schemes worth showing next to link text; others (javascript:, cid:, relative) are noise.
_SHOWN_SCHEMES = ("http://", "https://", "mailto:", "ftp://", "tel:")
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# More than anybody reads; also bounds the time spent on one body.
_MAX_HTML_CHARS = 2_000_000
_MAX_DEPTH = 1000  # browsers stop nesting at 512; real mail stays far below either
_AUTO_CLOSED = frozenset(
    {"p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "rp", "rt", "tbody", "thead"}
)
_NOT_NESTING = _VOID | _AUTO_CLOSED
_TAG_START = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
_ANY_TAG = re.compile(r"<[^<>]*>")
# Tags html_to_text looks at; nh3 drops the rest but keeps their text.
_TEXT_TAGS = frozenset(
    {
        "a", "img", "br", "hr", "pre", "blockquote", "ul", "ol", "li", "dl", "dt", "dd",
        "table", "caption", "thead", "tbody", "tfoot", "tr", "td", "th", "p", "div",
        "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer",
        "address", "center", "nav", "aside", "main", "figure", "figcaption", "fieldset",
        "details", "summary", "form",
    }
)  # fmt: skip


class _TextBuilder(HTMLParser):
    """Collects text with line structure; one instance per document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._pending_newlines = 0  # newlines owed before the next text
        self._at_line_start = True
        self._hidden_depth = 0
        self._pre_depth = 0
        self._quote_depth = 0
        self._list_depth = 0
        self._links: list[tuple[str, int]] = []  # (href, index in _out where its text starts)
        self._row_has_cell = False

    # -- output primitives -------------------------------------------------------------

    def _newline(self, count: int = 1) -> None:
        if self._out:  # never start the document with blank lines
            self._pending_newlines = max(self._pending_newlines, count)

    def _write(self, text: str, *, keep_spaces: bool = False) -> None:
        keep_spaces = keep_spaces or bool(self._pre_depth)
        if not text or (
            not keep_spaces
            and (self._pending_newlines or self._at_line_start)
            and not text.strip(" ")
        ):
            return  # indentation between tags is not content
        if self._pending_newlines:
            self._out.append("\n" * self._pending_newlines)
            self._pending_newlines = 0
            self._at_line_start = True
        if self._at_line_start:
            text = text if keep_spaces else text.lstrip(" ")
            if self._quote_depth:
                self._out.append("> " * self._quote_depth)
            self._at_line_start = False
        self._out.append(text)

    # -- parser callbacks --------------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            if tag not in _VOID:
                self._hidden_depth += 1
            return
        if self._hidden_depth:
            return
        if tag == "br":
            # Each <br> ends a line; two in a row leave a blank line, more add nothing.
            if self._out:
                self._pending_newlines = min(self._pending_newlines + 1, 2)
            return
        if tag in _PARAGRAPHS:
            self._newline(2 if not self._list_depth else 1)
        elif tag in _BLOCKS:
            self._newline(1)
        if tag == "blockquote":
            self._quote_depth += 1
        elif tag == "pre":
            self._pre_depth += 1
        elif tag in ("ul", "ol"):
            self._list_depth += 1
        elif tag == "li":
            self._write("  " * max(self._list_depth - 1, 0) + "- ", keep_spaces=True)
        elif tag == "tr":
            self._row_has_cell = False
        elif tag in ("td", "th"):
            if self._row_has_cell:
                self._write(" | ", keep_spaces=True)
            self._row_has_cell = True
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self._out)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self._write(f"[{alt}]")
        elif tag == "hr":
            self._write("-" * 20)
            self._newline(1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <img/>: a self-closing tag never opens anything.
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden_depth = max(self._hidden_depth - 1, 0)
            return
        if self._hidden_depth:
            return
        if tag == "a" and self._links:
            self._close_link()
        elif tag == "blockquote":
            self._quote_depth = max(self._quote_depth - 1, 0)
        elif tag == "pre":
            self._pre_depth = max(self._pre_depth - 1, 0)
        elif tag in ("ul", "ol"):
            self._list_depth = max(self._list_depth - 1, 0)
        if tag in _PARAGRAPHS:
            self._newline(2 if not self._list_depth else 1)
        elif tag in _BLOCKS:
            self._newline(1)

    def handle_data(self, data: str) -> None:
        if self._hidden_depth:
            return
        if self._pre_depth:
            # Preformatted: keep spaces and line breaks as they are.
            lines = data.replace("\r\n", "\n").replace("\xa0", " ").split("\n")
            for i, line in enumerate(lines):
                if i and self._out:
                    self._pending_newlines += 1
                self._write(line)
            return
        text = _SPACES.sub(" ", data)
        if self._out and self._out[-1].endswith(" ") and text.startswith(" "):
            text = text[1:]
        self._write(text)

    def _close_link(self) -> None:
        href, start = self._links.pop()
        href = href.strip()
        if not href.lower().startswith(_SHOWN_SCHEMES):
            return
        text = "".join(self._out[start:]).strip()
        shown = href[7:] if href.lower().startswith("mailto:") else href
        if text and text not in (href, shown):
            self._write(f" ({shown})")
        elif not text:
            self._write(shown)

    def result(self) -> str:
        while self._links:  # unclosed <a> at the end of a broken document
            self._close_link()
        text = "".join(self._out)
        lines = [line.rstrip() for line in text.split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body: blocks become lines, links keep their URL."""
    html = html[:_MAX_HTML_CHARS]
    if _too_deep(html):
        return _crude_text(html)
    # html.parser is quadratic on some malformed input (unterminated attribute quotes,
    # unclosed comments: a 400 kB body took minutes). nh3's linear HTML5 parser first
    # rewrites the document into well-formed markup, which html.parser reads in linear time.
    builder = _TextBuilder()
    builder.feed(
        nh3.clean(
            html,
            tags=_TEXT_TAGS,
            clean_content_tags=_CONTENT_DROPPED,
            attributes={"a": {"href"}, "img": {"alt"}},
            url_schemes={"http", "https", "mailto", "ftp", "tel"},
            link_rel=None,
        )
    )
    builder.close()
    return builder.result()


def _too_deep(html: str) -> bool:
    """True when elements nest deeper than any real mail does.

    HTML5 tree building (nh3, browsers) costs depth x tags; 40,000 nested <div> took nh3
    8 s. Tags that close themselves implicitly (p, li, td, ...) and void tags do not nest.
    """
    depth = 0
    # findall, not finditer: no match objects (a 1 MB body of 260,000 tags took 0.7 s).
    for closing, name in _TAG_START.findall(html):
        if name.lower() in _NOT_NESTING:
            continue
        if not closing:
            depth += 1
            if depth > _MAX_DEPTH:
                return True
        elif depth:
            depth -= 1
    return False


def _crude_text(html: str) -> str:
    """Tags stripped by a linear regex: the fallback for pathological documents."""
    text = unescape(_ANY_TAG.sub(" ", html))
    lines = (_SPACES.sub(" ", line).strip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


# -- sanitizing ------------------------------------------------------------------------

_ALLOWED_TAGS = (set(nh3.ALLOWED_TAGS) | {"tfoot", "font"}) - {"area", "map"}
_CONTENT_DROPPED = set(_HIDDEN)
_CELL_ATTRS = {"colspan", "rowspan", "align", "valign"}
_ALLOWED_ATTRIBUTES = {
    "*": {"dir", "lang", "title"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "td": _CELL_ATTRS,
    "th": _CELL_ATTRS,
    "table": {"border", "cellpadding", "cellspacing", "width"},
    "ol": {"start"},
    "font": {"color"},
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}


def _only_inline_images(tag: str, attribute: str, value: str) -> str | None:
    """Images may only point at parts of the message itself: remote ones are tracking pixels."""
    if tag == "img" and attribute == "src" and not value.strip().lower().startswith("cid:"):
        return None
    if tag == "a" and attribute == "href" and value.strip().lower().startswith("cid:"):
        return None
    return value


def sanitize_html(html: str) -> str:
    """HTML that is safe to show in the agent UI: formatting, tables, safe links, cid: images."""
    html = html[:_MAX_HTML_CHARS]
    if _too_deep(html):
        return f"<pre>{escape(_crude_text(html))}</pre>"
    cleaned = nh3.clean(
        html,
        tags=_ALLOWED_TAGS,
        clean_content_tags=_CONTENT_DROPPED,
        attributes=_ALLOWED_ATTRIBUTES,
        attribute_filter=_only_inline_images,
        url_schemes=_URL_SCHEMES,
        url_relative="deny",
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return cleaned.strip()
