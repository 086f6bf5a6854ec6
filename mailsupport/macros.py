"""Canned replies (macros): texts an agent starts a reply from, filled in for the ticket.

A macro is a Markdown file with jinja2 variables in the `macros/` folder of the templates:
`NAME.LANGUAGE.md` (`password-reset.ru.md`) for one language, or `NAME.md` for any. As with
the mail templates (templating.py), a file in the user's templates directory
(MAILSUPPORT_TEMPLATES_DIR, or a mailbox's `templates_dir`) under `macros/` replaces the
packaged one of the same name, and every other packaged macro stays. A jinja2 comment on
the first line, `{# Reset a forgotten password #}`, is the macro's title: `macro list`
shows it, and like every comment it is not part of the text.

The text is rendered in jinja2's sandbox with StrictUndefined (a misspelt variable is an
error, never an empty string), with the variables of `macro_values`. Every problem is a
TemplateError of one line.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailsupport.errors import UsageError
from mailsupport.templating import LANGUAGES, TemplateError, Templates

if TYPE_CHECKING:
    from mailsupport.mail import Address
    from mailsupport.store.models import Ticket

FOLDER = "macros"
_FILE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)(?:\.(?P<language>[a-z]{2,3}))?\.md")
_TITLE = re.compile(r"\s*\{#-?\s*(?P<title>.*?)\s*-?#\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class MacroFile:
    """One file of a macro: `language` is "" for a file that serves every language."""

    name: str
    language: str
    filename: str  # NAME.LANGUAGE.md or NAME.md
    path: str  # the user's file; "" for a built-in one
    source: str

    @property
    def where(self) -> str:
        return self.path or f"built-in {self.filename}"

    @property
    def title(self) -> str:
        """The comment on its first line, else its first line of text (shortened)."""
        found = _TITLE.match(self.source)
        if found:
            return " ".join(found["title"].split())
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        return first if len(first) <= 70 else first[:69] + "…"


class Macros:
    """The macros in effect: those in `templates_dir`/macros over the packaged ones."""

    def __init__(self, templates_dir: Path | None) -> None:
        if templates_dir is not None and not templates_dir.is_dir():
            raise TemplateError(
                f"templates directory not found: {templates_dir} (check MAILSUPPORT_TEMPLATES_DIR)"
            )
        mine = templates_dir / FOLDER if templates_dir is not None else None
        self.user_dir = mine if mine is not None and mine.is_dir() else None
        self.defaults = _packaged()
        self.templates = Templates(self.user_dir, defaults=self.defaults)

    def all(self) -> list[MacroFile]:
        """Every macro file in effect, by name and language."""
        found: dict[str, MacroFile] = {}
        for path, filename, read in [*self._packaged(), *self._mine()]:
            match = _FILE.fullmatch(filename)
            if match is not None:  # not a README, an editor's leftovers, an included _part.md
                source = _text(read, path or f"built-in {filename}")
                found[filename] = MacroFile(
                    match["name"], match["language"] or "", filename, path, source
                )
        return sorted(found.values(), key=lambda m: (m.name.lower(), m.language))

    def versions(self, name: str) -> list[MacroFile]:
        """The files of macro `name` (its languages); UsageError when there is none."""
        files = [m for m in self.all() if m.name.lower() == name.strip().lower()]
        if not files:
            raise UsageError(f"no macro named {name!r} (see `mailsupport macro list`)")
        return files

    def find(self, name: str, language: str) -> MacroFile:
        """The file of macro `name` for `language`: NAME.LANGUAGE.md, else NAME.md, else
        another language's (English first), so that a macro written once still works."""
        files = {m.language: m for m in self.versions(name)}
        for choice in (language, "", *LANGUAGES, *sorted(files)):
            if choice in files:
                return files[choice]
        raise AssertionError("versions() returns at least one file")

    def render(self, macro: MacroFile, values: dict[str, Any]) -> str:
        """The macro's text for `values` (see `macro_values`), without surrounding blank
        lines; TemplateError (one line) for any problem."""
        try:
            text = self.templates.render_values(macro.filename, values)
        except TemplateError as error:  # "template FILE, line 3: ..." names a macro here
            raise TemplateError(f"macro {str(error).removeprefix('template ')}") from None
        return text.strip("\n").rstrip()

    def _packaged(self) -> list[tuple[str, str, Callable[[], bytes]]]:
        if not self.defaults.is_dir():
            return []
        entries = sorted((e for e in self.defaults.iterdir() if e.is_file()), key=_name)
        return [("", e.name, e.read_bytes) for e in entries]

    def _mine(self) -> list[tuple[str, str, Callable[[], bytes]]]:
        if self.user_dir is None:
            return []
        try:
            paths = sorted(p for p in self.user_dir.iterdir() if p.is_file())
        except OSError as error:
            raise TemplateError(
                f"macros folder {self.user_dir} cannot be read: {error.strerror or error}"
            ) from None
        return [(str(p), p.name, p.read_bytes) for p in paths]


def macro_values(
    ticket: Ticket,
    *,
    tag: str,
    customer: Address | None,
    agent: str,
    support: Address,
    language: str,
) -> dict[str, Any]:
    """The variables of a macro (documented in templates/README.md), each always defined
    ("" when it does not apply): `ticket`, `customer`, `agent`, `support`, `language`."""
    return {
        "ticket": {
            "number": ticket.number, "tag": tag, "subject": ticket.subject,
            "status": ticket.status, "priority": ticket.priority, "queue": ticket.queue,
            "type": ticket.type, "line": ticket.line, "assignee": ticket.assignee or "",
        },
        "customer": {
            "name": customer.name if customer else "",
            "address": customer.address if customer else "",
        },
        "agent": {"name": agent},
        "support": {"name": support.name, "address": support.address},
        "language": language,
    }  # fmt: skip


def sample_values(language: str) -> dict[str, Any]:
    """Values for checking a macro without a ticket (`doctor`)."""
    from mailsupport.mail import Address
    from mailsupport.store.models import Ticket

    ru = language == "ru"
    ticket = Ticket(number=12, subject="Не приходит счёт" if ru else "Cannot log in")
    customer = Address("Иван Смирнов" if ru else "Anna Example", "customer@example.org")
    return macro_values(
        ticket, tag="[#12]", customer=customer, agent="Maria",
        support=Address("Support", "support@example.com"), language=language,
    )  # fmt: skip


def check_macros(templates_dir: Path | None) -> list[str]:
    """Problems with the macros in effect, one line each: each renders with sample values,
    both with every value filled and with the optional ones empty."""
    try:
        macros = Macros(templates_dir)
        files = macros.all()
    except TemplateError as error:
        return [str(error)]
    problems = []
    for macro in files:
        full = sample_values(macro.language or "en")
        empty = {**full, "customer": {**full["customer"], "name": ""}}
        for values in (full, empty):
            try:
                macros.render(macro, values)
            except TemplateError as error:
                problems.append(str(error))
                break
    return problems


def _packaged() -> Traversable:
    return importlib.resources.files("mailsupport").joinpath("templates", FOLDER)


def _name(entry: Traversable) -> str:
    return entry.name


def _text(read: Callable[[], bytes], where: str) -> str:
    try:
        return read().decode("utf-8-sig")
    except OSError as error:
        raise TemplateError(f"macro {where} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise TemplateError(
            f"macro {where}: not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
