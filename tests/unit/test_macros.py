"""Macros: the shipped ones, the lookup by language, the documented variables, checking."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailsupport.errors import UsageError
from mailsupport.macros import Macros, check_macros, macro_values, sample_values
from mailsupport.templating import LANGUAGES, TemplateError
from tests.support.paths import ROOT


def test_the_shipped_macros_have_every_language_and_no_problem() -> None:
    shipped = Macros(None).all()
    names = {m.name for m in shipped}
    assert {"password-reset", "need-more-info"} <= names
    for name in names:
        assert sorted(m.language for m in shipped if m.name == name) == sorted(LANGUAGES)
    assert all(m.title and not m.path for m in shipped)
    assert check_macros(None) == []


def test_every_macro_variable_is_documented_and_nothing_else() -> None:
    readme = (ROOT / "templates" / "README.md").read_text()
    section = readme.split("### Macro variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([\w.]+)` \|", section, re.MULTILINE))
    values = sample_values("en")
    given = {
        f"{key}.{field}" if isinstance(value, dict) else key
        for key, value in values.items()
        for field in (value if isinstance(value, dict) else [None])
    }
    assert documented == given


def test_the_language_is_chosen_like_the_reply_templates(tmp_path: Path) -> None:
    (tmp_path / "macros").mkdir()
    (tmp_path / "macros" / "hello.md").write_text("Hello in any language")
    (tmp_path / "macros" / "bye.ru.md").write_text("Пока")
    macros = Macros(tmp_path)
    assert macros.find("password-reset", "ru").filename == "password-reset.ru.md"
    assert macros.find("password-reset", "de").filename == "password-reset.en.md"
    assert macros.find("hello", "ru").filename == "hello.md"
    assert macros.find("bye", "en").filename == "bye.ru.md"  # the only one there is
    assert macros.find("HELLO", "en").name == "hello"
    with pytest.raises(UsageError, match="macro list"):
        macros.find("nope", "en")


def test_a_title_is_the_first_lines_comment_else_its_first_text(tmp_path: Path) -> None:
    (tmp_path / "macros").mkdir()
    (tmp_path / "macros" / "a.md").write_text("{#- Refund:\n  how #}\nText")
    (tmp_path / "macros" / "b.md").write_text("\n\nFirst line of text\nsecond")
    titles = {m.name: m.title for m in Macros(tmp_path).all() if m.path}
    assert titles == {"a": "Refund: how", "b": "First line of text"}
    assert Macros(tmp_path).render(Macros(tmp_path).find("a", "en"), sample_values("en")) == (
        "Text"
    )


def test_missing_values_are_empty_and_a_misspelt_one_is_an_error(tmp_path: Path) -> None:
    from mailsupport.mail import Address
    from mailsupport.store.models import Ticket

    (tmp_path / "macros").mkdir()
    (tmp_path / "macros" / "m.md").write_text(
        "{{ ticket.number }} {{ ticket.assignee or '-' }} {{ customer.name or 'there' }}"
    )
    macros = Macros(tmp_path)
    values = macro_values(
        Ticket(number=7, subject="x"), tag="[#7]", customer=None, agent="olga",
        support=Address("Support", "support@example.com"), language="en",
    )  # fmt: skip
    assert macros.render(macros.find("m", "en"), values) == "7 - there"
    (tmp_path / "macros" / "m.md").write_text("{{ ticket.numbr }}")
    with pytest.raises(TemplateError, match=r"^macro .*m\.md, line 1: .*'numbr'"):
        macros.render(macros.find("m", "en"), values)
    problems = check_macros(tmp_path)
    assert len(problems) == 1 and "m.md, line 1" in problems[0]


def test_a_templates_directory_that_does_not_exist_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="templates directory not found"):
        Macros(tmp_path / "missing")
    assert Macros(tmp_path).user_dir is None  # no macros/ there: only the built-in ones
