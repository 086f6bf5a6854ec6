"""Templates: shipped defaults, overrides, the sandbox, clear errors, language detection."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

import pytest

from mailsupport.templating import (
    KINDS,
    LANGUAGES,
    BodyContext,
    TemplateError,
    Templates,
    check_templates,
    choose_language,
    detect_language,
    sample_contexts,
)
from tests.support.paths import ROOT

EXAMPLES = ROOT / "templates"
PACKAGED = importlib.resources.files("mailsupport").joinpath("templates")


def context(kind: str = "ack", language: str = "en", **changes: object) -> BodyContext:
    return dataclasses.replace(sample_contexts(kind, language)[0], **changes)  # type: ignore[arg-type]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped defaults ---------------------------------------------------------------


def test_shipped_defaults_have_no_problems() -> None:
    assert check_templates(None) == []


def test_every_kind_and_language_has_a_text_template_and_ack_has_html() -> None:
    names = {p.name for p in PACKAGED.iterdir()}
    for kind in KINDS:
        for language in LANGUAGES:
            assert f"{kind}.{language}.txt" in names
    assert {"ack.en.html", "ack.ru.html"} <= names


def files(folder: Traversable, under: str = "") -> dict[str, bytes]:
    """Every file below `folder` (macros/ too), by its path inside it."""
    found: dict[str, bytes] = {}
    for entry in folder.iterdir():
        if entry.is_dir():
            found |= files(entry, f"{under}{entry.name}/")
        elif entry.is_file():
            found[f"{under}{entry.name}"] = entry.read_bytes()
    return found


def test_the_user_editable_examples_are_copies_of_the_defaults() -> None:
    examples = {k: v for k, v in files(EXAMPLES).items() if k != "README.md"}
    assert examples == files(PACKAGED)
    assert "macros/password-reset.ru.md" in examples


def test_the_package_data_glob_ships_every_default() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["mailsupport"]
    for name in files(PACKAGED):
        # setuptools' `*` stays inside one folder: templates/* ships no templates/macros/x
        path = PurePosixPath(f"templates/{name}")
        assert any(len(PurePosixPath(g).parts) == len(path.parts) and path.match(g)
                   for g in globs), name  # fmt: skip


def test_every_variable_is_documented_and_nothing_else() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    section = readme.split("### Variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))
    assert documented == {f.name for f in dataclasses.fields(BodyContext)}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_defaults_render_every_value_and_no_leftover_markup(kind: str, language: str) -> None:
    rendered = Templates().render(kind, language, context(kind, language))
    assert rendered.text.endswith("\n") and not rendered.text.startswith("\n")
    assert "{" not in rendered.text and "\n\n\n" not in rendered.text
    assert "-- \n" in rendered.text  # the signature separator survives
    greeting = rendered.text.splitlines()[0]
    assert greeting in ("Hello Anna Example,", "Здравствуйте, Иван Смирнов!")
    assert "[#12]" in rendered.text or kind == "reply"
    if kind == "reply":
        assert "Line one <b>&\nline two" in rendered.text  # plain text is not escaped
        assert "> it <does> not work." in rendered.text
        wrote = "Anna Example wrote:" if language == "en" else "Anna Example написал(а):"
        assert f"2 {'March' if language == 'en' else 'марта'} 2026" in rendered.text
        assert wrote in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_defaults_without_the_optional_values_read_well(language: str) -> None:
    empty = sample_contexts("reply", language)[1]
    text = Templates().render("reply", language, dataclasses.replace(empty, text="Ok.")).text
    assert text.splitlines()[0] in ("Hello,", "Здравствуйте!")
    assert text.endswith("-- \nSupport\n")  # no quote, no empty agent line


def test_html_is_autoescaped_and_text_is_not() -> None:
    hostile = context(ticket_subject="<script>alert(1)</script> & co")
    rendered = Templates().render("ack", "en", hostile)
    assert rendered.html is not None
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in rendered.html
    assert "<script>" not in rendered.html
    assert '"<script>alert(1)</script> & co"' in rendered.text


def test_no_html_template_means_no_html() -> None:
    assert Templates().render("reply", "en", context("reply")).html is None


# --- language -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Здравствуйте! Счёт за март так и не пришёл.", "ru"),
        ("Hello, I cannot log in.", "en"),
        ("", "en"),
        ("12345 !!!", "en"),
        ("Не работает Microsoft Outlook 365 на Windows", "ru"),
        ("Привет. See https://example.com/a/very/long/path/with/many/words/in/it", "en"),
        ("Спасибо, всё работает!\n\n> Hello Ivan, please try again with the new password.", "ru"),
        ("Thanks!\n\n> Здравствуйте, Иван! Попробуйте ещё раз, пожалуйста.", "en"),
        ("Это я", "ru"),
        ("ok Я", "en"),  # a stray letter is not a language
    ],
)
def test_detect_language(text: str, expected: str) -> None:
    assert detect_language(text) == expected


def test_choose_language() -> None:
    assert choose_language("auto", "Добрый день") == "ru"
    assert choose_language("AUTO", "Good day") == "en"
    assert choose_language("en", "Добрый день") == "en"
    assert choose_language("ru", "Good day") == "ru"


# --- overrides --------------------------------------------------------------------------


def test_a_user_file_overrides_only_its_own_default(tmp_path: Path) -> None:
    write(tmp_path, "ack.en.txt", "Got it: {{ ticket_tag }}\n")
    templates = Templates(tmp_path)
    rendered = templates.render("ack", "en", context())
    assert rendered.text == "Got it: [#12]\n"
    assert rendered.html is not None and "Thank you for contacting us" in rendered.html
    russian = templates.render("ack", "ru", context(language="ru"))
    assert "Спасибо, что написали нам" in russian.text


def test_an_empty_html_override_sends_text_only(tmp_path: Path) -> None:
    write(tmp_path, "ack.en.html", "")
    assert Templates(tmp_path).render("ack", "en", context()).html is None


def test_a_new_html_template_adds_an_html_part(tmp_path: Path) -> None:
    write(tmp_path, "reply.en.html", '<div style="white-space: pre-wrap">{{ text }}</div>')
    html = Templates(tmp_path).render("reply", "en", context("reply")).html
    assert html == '<div style="white-space: pre-wrap">Line one &lt;b&gt;&amp;\nline two</div>\n'


def test_partials_can_be_included(tmp_path: Path) -> None:
    write(tmp_path, "_footer.txt", "Call us: 555-0100")
    write(tmp_path, "ack.en.txt", 'Ticket {{ ticket_tag }}\n{% include "_footer.txt" %}\n')
    assert Templates(tmp_path).render("ack", "en", context()).text == (
        "Ticket [#12]\nCall us: 555-0100\n"
    )
    assert check_templates(tmp_path) == []


def test_an_edited_template_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    path = write(tmp_path, "ack.en.txt", "one\n")
    templates = Templates(tmp_path)
    assert templates.render("ack", "en", context()).text == "one\n"
    path.write_text("two\n")
    os.utime(path, (1, 1))  # a different mtime, whatever the file system's resolution
    assert templates.render("ack", "en", context()).text == "two\n"


def test_an_override_added_or_removed_later_is_picked_up(tmp_path: Path) -> None:
    templates = Templates(tmp_path)
    assert "Thank you for contacting us" in templates.render("ack", "en", context()).text
    path = write(tmp_path, "ack.en.txt", "mine\n")
    assert templates.render("ack", "en", context()).text == "mine\n"
    path.unlink()
    assert "Thank you for contacting us" in templates.render("ack", "en", context()).text


def test_the_copied_examples_folder_works_as_a_templates_dir() -> None:
    assert check_templates(EXAMPLES) == []


# --- errors -----------------------------------------------------------------------------


def test_a_misspelt_variable_names_file_line_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "ack.en.txt", "Hello,\n\nyour ticket {{ tikcet_number }}.\n")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).render("ack", "en", context())
    assert str(caught.value) == f"template {path}, line 3: 'tikcet_number' is undefined"
    assert caught.value.exit_code == 2  # a configuration problem
    assert check_templates(tmp_path) == [str(caught.value)]


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "reply.ru.txt", "Здравствуйте!\n\n{% if text %}\n{{ text }}\n")
    with pytest.raises(TemplateError) as caught:
        Templates(tmp_path).render("reply", "ru", context("reply", "ru"))
    message = str(caught.value)
    assert message.startswith(f"template {path}, line 4: syntax error: Unexpected end of template")
    assert "\n" not in message
    assert check_templates(tmp_path) == [message]


def test_an_error_in_an_html_template_is_reported_too(tmp_path: Path) -> None:
    path = write(tmp_path, "ack.ru.html", "<p>{{ ticket_subject | nosuchfilter }}</p>")
    with pytest.raises(TemplateError, match=rf"^template {re.escape(str(path))}, line 1: "):
        Templates(tmp_path).render("ack", "ru", context(language="ru"))


def test_other_runtime_errors_are_reported_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "closed.en.txt", "Closed.\n{{ ticket_number / 0 }}\n")
    assert check_templates(tmp_path) == [
        f"template {path}, line 2: ZeroDivisionError: division by zero"
    ]


def test_the_sandbox_keeps_templates_away_from_python(tmp_path: Path) -> None:
    write(tmp_path, "ack.en.txt", "{{ ticket_subject.__class__.__mro__ }}\n")
    with pytest.raises(TemplateError, match="unsafe"):
        Templates(tmp_path).render("ack", "en", context())


def test_an_optional_value_left_empty_is_checked_too(tmp_path: Path) -> None:
    write(tmp_path, "reply.en.txt", "{{ text }}\n{% if agent_name %}{{ agnet_name }}{% endif %}\n")
    assert Templates(tmp_path).render("reply", "en", context("reply", agent_name="")).text
    [problem] = check_templates(tmp_path)
    assert "'agnet_name' is undefined" in problem


def test_an_empty_text_body_is_a_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "closed.en.txt", "{% if False %}x{% endif %}\n")
    assert check_templates(tmp_path) == [f"template {path}: renders an empty message body"]


def test_a_template_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ack.ru.txt"
    path.write_bytes("Здравствуйте".encode("cp1251"))
    with pytest.raises(TemplateError, match=rf"^template {re.escape(str(path))}: not UTF-8"):
        Templates(tmp_path).render("ack", "ru", context(language="ru"))


def test_misnamed_files_are_reported_and_readmes_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "notes")
    write(tmp_path, "ack.en.txt~", "editor backup")
    write(tmp_path, ".hidden", "x")
    write(tmp_path, "ack.txt", "x")
    write(tmp_path, "ack.de.txt", "x")
    write(tmp_path, "reply.en.text", "x")
    problems = check_templates(tmp_path)
    assert [p.split(" is never used")[0] for p in problems] == [
        f"template {tmp_path / name}" for name in ("ack.de.txt", "ack.txt", "reply.en.text")
    ]


def test_a_broken_partial_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "_footer.txt", "{% for x in %}\n")
    [problem] = check_templates(tmp_path)
    assert problem.startswith(f"template {path}, line 1: syntax error")


def test_a_missing_templates_dir_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(TemplateError, match="templates directory not found"):
        Templates(missing)
    assert check_templates(missing) == [
        f"templates directory not found: {missing} (check MAILSUPPORT_TEMPLATES_DIR)"
    ]


def test_template_names_cannot_leave_the_directory(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    write(tmp_path, "secret.txt", "do not show")
    write(tmp_path / "t", "ack.en.txt", '{% include "../secret.txt" %}\n')
    with pytest.raises(TemplateError, match=r"included template '\.\./secret\.txt' not found"):
        Templates(tmp_path / "t").render("ack", "en", context())


def test_an_unknown_language_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match=r"^template ack\.de\.txt not found \(built in\)$"):
        Templates().render("ack", "de", context(language="de"))
