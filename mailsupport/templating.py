"""Mail body templates: loading, rendering, checking. Pure apart from reading template files.

Templates are jinja2 files named `<kind>.<language>.<txt|html>` (`ack.en.txt`,
`reply.ru.txt`, `ack.ru.html`). A file in the user's templates directory
(MAILSUPPORT_TEMPLATES_DIR) replaces the shipped default of the same name; every other
template still comes from the defaults packaged in `mailsupport/templates/`.

Rendering runs in jinja2's sandbox with StrictUndefined, so a user's template can neither
reach into Python objects nor silently print nothing for a misspelt variable. Every problem
becomes a TemplateError with one line naming the file, the line and what is wrong.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from mailsupport.errors import ConfigError

__all__ = [
    "KINDS",
    "LANGUAGES",
    "BodyContext",
    "Rendered",
    "TemplateError",
    "Templates",
    "check_templates",
    "choose_language",
    "detect_language",
    "sample_contexts",
]

KINDS = ("ack", "reply", "closed")
LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # plain file names: no paths, no dotfiles
_TEMPLATE_NAME = re.compile(r"(?P<kind>[a-z]+)\.(?P<lang>[a-z]{2,3})\.(?P<ext>txt|html)")
# Files a templates directory may hold besides templates (copied README, editor leftovers).
_IGNORED = re.compile(r"(?i)(readme.*|.*~|.*\.(bak|orig|swp|rej))")


class TemplateError(ConfigError):
    """A template that cannot be loaded or rendered. The message is one line: which
    template, which line, what is wrong."""


# ------------------------------------------------------------------------------------------
# Language
# ------------------------------------------------------------------------------------------

_CYRILLIC = re.compile(r"[\u0400-\u04ff\u0500-\u052f]")
_QUOTED_LINE = re.compile(r"^\s*>.*$", re.MULTILINE)


def detect_language(text: str) -> str:
    """The language of `text`: "ru" when at least 30% of its letters are Cyrillic, else "en".

    Quoted lines ("> ...") are ignored: a Russian answer quoting our English mail is still
    Russian. The low bar leaves room for Latin product names, URLs and signatures.
    """
    text = _QUOTED_LINE.sub("", text)
    letters = sum(map(str.isalpha, text))  # about 60% of the time of a generator's loop
    if not letters:
        return DEFAULT_LANGUAGE
    cyrillic = len(_CYRILLIC.findall(text))
    return "ru" if cyrillic >= 3 and cyrillic * 10 >= letters * 3 else "en"


def choose_language(setting: str, text: str) -> str:
    """The language to answer in: the setting, or detected from `text` when it is "auto"."""
    setting = setting.strip().lower()
    if setting in ("", "auto"):
        return detect_language(text)
    return setting


# ------------------------------------------------------------------------------------------
# The context every template gets
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyContext:
    """The variables of every template, all always defined ("" when not applicable).

    Documented in templates/README.md; a test keeps the two in step.
    """

    kind: str  # "ack", "reply" or "closed"
    language: str  # "en", "ru"
    ticket_number: int
    ticket_tag: str  # "[#12]"
    ticket_subject: str  # the ticket's title, without tags and "Re:"
    subject: str  # the Subject of this mail
    customer_name: str  # display name of the first To recipient, "" when unknown
    customer_address: str
    support_name: str
    support_address: str
    agent_name: str  # the agent answering; "" for automatic mail
    text: str  # the agent's text (reply; optional comment on closed)
    quote: str  # the customer's last message, every line prefixed "> "; "" when none
    quote_name: str  # who wrote the quoted message (name, else address)
    quote_date: str  # when, formatted for the language; "" when unknown
    date: str  # when this mail is sent, formatted for the language
    # Knowledge-base articles that may answer the customer (ack): dicts with title and text.
    articles: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONTEXT_NAMES}


_CONTEXT_NAMES = tuple(field.name for field in dataclasses.fields(BodyContext))


def sample_contexts(kind: str, language: str) -> list[BodyContext]:
    """Contexts for checking a template: every value filled, and every optional one empty."""
    ru = language == "ru"
    full = BodyContext(
        kind=kind,
        language=language,
        ticket_number=12,
        ticket_tag="[#12]",
        ticket_subject="Не приходит счёт" if ru else "Cannot log in",
        subject="Re: Не приходит счёт [#12]" if ru else "Re: Cannot log in [#12]",
        customer_name="Иван Смирнов" if ru else "Anna Example",
        customer_address="customer@example.org",
        support_name="Support",
        support_address="support@example.com",
        agent_name="Maria",
        text="Line one <b>&\nline two",
        quote="> Hello,\n> it <does> not work.",
        quote_name="Anna Example",
        quote_date="2 марта 2026 г. в 09:20 UTC" if ru else "2 March 2026 at 09:20 UTC",
        date="3 марта 2026 г. в 10:00 UTC" if ru else "3 March 2026 at 10:00 UTC",
        articles=[{"title": "Как сбросить пароль" if ru else "How to reset your password",
                   "text": "Step <one>\nStep two"}],
    )  # fmt: skip
    empty = dataclasses.replace(
        full,
        customer_name="", agent_name="", text="", quote="", quote_name="", quote_date="",
        articles=[],
    )  # fmt: skip
    return [full, empty]


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def _default_dir() -> Traversable:
    return importlib.resources.files("mailsupport").joinpath("templates")


class _Loader(jinja2.BaseLoader):
    """The user's directory first, then the packaged defaults; file by file.

    Remembers which file each template came from, so an error found while rendering can
    name the file and the line.
    """

    def __init__(self, user_dir: Path | None, defaults: Traversable | None = None) -> None:
        self.user_dir = user_dir
        self.defaults = defaults or _default_dir()
        self.names: dict[str, str] = {}  # filename given to jinja2 -> template name
        self.user_files: set[str] = set()
        self._shipped: dict[str, bool] = {}  # template name -> whether the defaults have it

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        if not _NAME.fullmatch(template):  # no paths: includes stay inside the directory
            raise jinja2.TemplateNotFound(template)
        if self.user_dir is not None:
            path = self.user_dir / template
            if path.is_file():
                filename = str(path)
                try:
                    mtime = path.stat().st_mtime
                    data = path.read_bytes()
                except OSError as exc:
                    raise TemplateError(
                        f"template {filename} cannot be read: {exc.strerror or exc}"
                    ) from None
                source = _read_text(data, filename)
                self.names[filename] = template
                self.user_files.add(filename)
                return source, filename, lambda: _mtime(path) == mtime
        default = self.defaults.joinpath(template)
        if default.is_file():
            filename = str(default)
            self.names[filename] = template
            user_dir = self.user_dir
            # Stale once the user adds an override of their own.
            uptodate = (lambda: not (user_dir / template).is_file()) if user_dir else _always
            return _read_text(default.read_bytes(), filename), filename, uptodate
        raise jinja2.TemplateNotFound(template)

    def exists(self, template: str) -> bool:
        if not _NAME.fullmatch(template):
            return False
        if self.user_dir is not None and (self.user_dir / template).is_file():
            return True
        shipped = self._shipped.get(template)
        if shipped is None:  # the package's files do not change while it runs
            shipped = self._shipped[template] = self.defaults.joinpath(template).is_file()
        return shipped

    def describe(self, filename: str | None, name: str | None) -> str:
        """How to name a template in a message: the user's path, or "built-in NAME"."""
        if filename and filename in self.user_files:
            return filename
        shown = self.names.get(filename or "", name or filename or "?")
        return f"built-in {shown}"


def _read_text(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")  # tolerate a BOM from Windows editors
    except UnicodeDecodeError as exc:
        raise TemplateError(
            f"template {filename}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None


def _always() -> bool:
    return True


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    html: str | None  # None when no HTML template exists (or it renders to nothing)


class Templates:
    """The templates in effect: `user_dir` (may be None) over the shipped defaults, or over
    `defaults` (another folder of them, such as the packaged macros)."""

    def __init__(self, user_dir: Path | None = None, defaults: Traversable | None = None) -> None:
        if user_dir is not None and not user_dir.is_dir():
            raise TemplateError(
                f"templates directory not found: {user_dir} (check MAILSUPPORT_TEMPLATES_DIR)"
            )
        self.user_dir = user_dir
        self._loader = _Loader(user_dir, defaults)
        self._env = jinja2.sandbox.SandboxedEnvironment(
            loader=self._loader,
            undefined=jinja2.StrictUndefined,
            # Escape only HTML templates: plain text must show "<" as "<".
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            trim_blocks=True,  # a line holding only {% if %} leaves no blank line
            lstrip_blocks=True,
            auto_reload=True,  # a long-running daemon picks up edited templates
        )

    def exists(self, name: str) -> bool:
        return self._loader.exists(name)

    def render_one(self, name: str, context: BodyContext) -> str:
        """Render one template file; any problem raises TemplateError (one line)."""
        return self.render_values(name, context.as_dict())

    def render_values(self, name: str, values: dict[str, Any]) -> str:
        """Render one template file with `values` as its variables (TemplateError, one line,
        for any problem)."""
        try:
            template = self._env.get_template(name)
            return template.render(values)
        except jinja2.TemplateNotFound as exc:
            if exc.name == name:
                where = f"in {self.user_dir} or built in" if self.user_dir else "built in"
                raise TemplateError(f"template {name} not found ({where})") from None
            raise self._error(name, exc) from None
        except TemplateError:
            raise
        except Exception as exc:  # anything a template does wrong is a template problem
            raise self._error(name, exc) from None

    def render(self, kind: str, language: str, context: BodyContext) -> Rendered:
        """The plain text body, and the HTML body when an HTML template exists."""
        text = _tidy(self.render_one(f"{kind}.{language}.txt", context))
        html_name = f"{kind}.{language}.html"
        html = None
        if self.exists(html_name):
            html = self.render_one(html_name, context).strip() or None
            if html is not None:
                html += "\n"
        return Rendered(text=text, html=html)

    def _error(self, name: str, exc: BaseException) -> TemplateError:
        filename, line = None, None
        if isinstance(exc, jinja2.TemplateSyntaxError):
            filename, line = exc.filename, exc.lineno
            name = exc.name or name
            what = f"syntax error: {exc.message}"
        else:
            # jinja2 rewrites the traceback so template code shows as frames of the
            # template file at the template's line: the innermost one is where it broke.
            for frame in traceback.extract_tb(exc.__traceback__):
                if frame.filename in self._loader.names:
                    filename, line = frame.filename, frame.lineno
            if isinstance(exc, jinja2.TemplateNotFound):
                what = f"included template {exc.name!r} not found"
            elif isinstance(exc, jinja2.UndefinedError | jinja2.TemplateError):
                what = str(exc.message or exc)
            else:
                what = f"{type(exc).__name__}: {exc}"
        where = self._loader.describe(filename, name)
        at = f", line {line}" if line else ""
        what = " ".join(what.split())  # one line, whatever the exception said
        return TemplateError(f"template {where}{at}: {what}")


def _tidy(text: str) -> str:
    """No leading or trailing blank lines; one final newline."""
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


# ------------------------------------------------------------------------------------------
# Checking (doctor, startup)
# ------------------------------------------------------------------------------------------


def check_templates(templates_dir: Path | None) -> list[str]:
    """Problems with the templates in effect, one line each; [] when all is well.

    Compiles every template and renders it with sample contexts (all values filled, and all
    optional ones empty), so syntax errors and misspelt variables show before a customer
    is due a mail. Files in `templates_dir` that mailsupport would never use are reported
    too: a misnamed override silently does nothing otherwise.
    """
    try:
        templates = Templates(templates_dir)
    except TemplateError as exc:
        return [str(exc)]
    problems: list[str] = []
    if templates_dir is not None:
        problems.extend(_unused_files(templates_dir))

    for kind in KINDS:
        for language in LANGUAGES:
            names = [f"{kind}.{language}.txt"]
            if templates.exists(f"{kind}.{language}.html"):
                names.append(f"{kind}.{language}.html")
            for name in names:
                problem = _check_one(templates, name, sample_contexts(kind, language))
                if problem:
                    problems.append(problem)

    for name in _partials(templates_dir):  # "_footer.txt" and such: only their syntax
        try:
            templates._env.get_template(name)
        except TemplateError as exc:
            problems.append(str(exc))
        except Exception as exc:
            problems.append(str(templates._error(name, exc)))
    return problems


def _partials(templates_dir: Path | None) -> list[str]:
    if templates_dir is None:
        return []
    try:
        return sorted(
            p.name for p in templates_dir.iterdir() if p.name.startswith("_") and p.is_file()
        )
    except OSError:
        return []  # reported by _unused_files


def _check_one(templates: Templates, name: str, contexts: list[BodyContext]) -> str | None:
    for context in contexts:
        try:
            output = templates.render_one(name, context)
        except TemplateError as exc:
            return str(exc)
        if name.endswith(".txt") and not output.strip():
            where = templates._loader.describe(templates._env.get_template(name).filename, name)
            return f"template {where}: renders an empty message body"
    return None


def _unused_files(templates_dir: Path) -> list[str]:
    problems = []
    try:
        entries = sorted(templates_dir.iterdir())
    except OSError as exc:
        return [f"templates directory {templates_dir} cannot be read: {exc.strerror}"]
    for path in entries:
        name = path.name
        if name.startswith((".", "_")) or _IGNORED.fullmatch(name) or path.is_dir():
            continue
        match = _TEMPLATE_NAME.fullmatch(name)
        if match and match["kind"] in KINDS and match["lang"] in LANGUAGES:
            if not os.access(path, os.R_OK):
                problems.append(f"template {path} cannot be read (check its permissions)")
            continue
        problems.append(
            f"template {path} is never used: names are KIND.LANGUAGE.txt or .html with KIND "
            f"one of {', '.join(KINDS)} and LANGUAGE one of {', '.join(LANGUAGES)}"
        )
    return problems
