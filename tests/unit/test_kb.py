"""The knowledge base: article files, matching (Russian inflections too), suggestions, the CLI."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mailsupport.config import Settings
from mailsupport.errors import ConfigError, NotFoundError
from mailsupport.kb import (
    KbError,
    article_text,
    check_kb,
    find_article,
    load_kb,
    parse_article,
    search,
    suggest,
    suggestions_for,
)
from mailsupport.markdowntext import plain_text
from tests.support.cli import cli
from tests.support.paths import ROOT

INVOICES_RU = """\
---
title: Где найти счета и акты
keywords: счет, счета, оплата, акт, бухгалтерия
language: ru
---
Все счета лежат в личном кабинете, в разделе «Оплата». Каждый счёт можно скачать в PDF.
Если счёт не пришёл на почту, проверьте папку «Спам».
"""
PASSWORD_RU = """\
---
title: Как сбросить пароль
keywords: пароль, сброс пароля, забыл пароль, не могу войти
language: ru
---
На странице входа нажмите «Забыли пароль?» и укажите адрес почты. Ссылка действует час.
"""
PASSWORD_EN = """\
---
title: How to reset your password
keywords: password, reset password, forgot password, locked out
language: en
---
Choose **Forgot password?** on the sign-in page and enter your email address.
The link we send works for one hour.
"""
INVOICES_EN = """\
---
title: Where to find your invoices
keywords: invoice, billing, receipt
language: en
---
Every invoice is in your account under Settings, Billing. Download any of them as a PDF.
"""
# Mentions passwords once, in passing: must never beat the password article.
PROFILE_EN = """\
---
title: Changing your profile picture
keywords: avatar, profile picture, photo
language: en
---
Open your profile and upload a photo of up to 5 MB. Your account, email and password stay as
they are. The picture appears for your colleagues within a minute.
"""
STATUS_ANY = """\
---
title: Service status page
keywords: status, outage, downtime, статус, сбой
---
See https://status.example.com for outages. Статус сервиса: https://status.example.com
"""

ARTICLES = {
    "invoices-ru": INVOICES_RU,
    "password-reset-ru": PASSWORD_RU,
    "password-reset-en": PASSWORD_EN,
    "invoices-en": INVOICES_EN,
    "profile-picture-en": PROFILE_EN,
    "status": STATUS_ANY,
}


def write(directory: Path, slug: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{slug}.md"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def kb_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "kb"
    for slug, text in ARTICLES.items():
        write(directory, slug, text)
    (directory / "README.md").write_text("# Not an article\n", encoding="utf-8")
    (directory / "_draft.md").write_text("no front matter: a draft\n", encoding="utf-8")
    (directory / "logo.png").write_bytes(b"\x89PNG")
    return directory


def slugs(found: list[Any]) -> list[str]:
    return [f.article.slug for f in found]


# ------------------------------------------------------------------------------------------
# Article files
# ------------------------------------------------------------------------------------------


def test_an_article_is_read_with_its_front_matter(kb_dir: Path) -> None:
    article = parse_article(kb_dir / "invoices-ru.md")
    assert article.slug == "invoices-ru"
    assert article.title == "Где найти счета и акты"
    assert article.keywords == ("счет", "счета", "оплата", "акт", "бухгалтерия")
    assert article.language == "ru"
    assert article.body.startswith("Все счета лежат")
    assert parse_article(kb_dir / "status.md").language == ""  # every language


def test_front_matter_allows_quotes_brackets_blank_lines_and_a_bom(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "quoted",
        '\ufeff---\r\nTitle: "Billing: the basics"\r\n\r\nkeywords: [invoice, "vat"]\r\n'
        "language: EN\r\n---\r\nBody.\r\n",
    )
    article = parse_article(path)
    assert (article.title, article.keywords, article.language) == (
        "Billing: the basics",
        ("invoice", "vat"),
        "en",
    )
    assert article.body == "Body."


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("title: x\n---\nbody\n", 1, "starts with a '---' line"),
        ("", 1, "starts with a '---' line"),
        ("---\ntitle: x\nkeywords a, b\n---\nbody\n", 3, "expected 'name: value'"),
        ("---\ntitle: x\nauthor: me\n---\nbody\n", 3, "unknown field 'author'"),
        ("---\ntitle: x\n\ntitle: y\n---\nbody\n", 4, "title given twice (first on line 2)"),
        ("---\nkeywords: a\n---\nbody\n", 3, "needs a title"),
        ("---\ntitle:\n---\nbody\n", 2, "needs a title"),
        ("---\ntitle: x\nlanguage: de\n---\nbody\n", 3, "language must be en or ru"),
        ("---\ntitle: x\nbody without an end\n", 1, "never closed"),
        ("---\ntitle: x\n---\n\n  \n", 3, "no article text"),
    ],
)
def test_a_bad_article_names_its_file_and_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = write(tmp_path, "bad", text)
    with pytest.raises(KbError) as caught:
        parse_article(path)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path} line {line}: ")
    assert reason in str(caught.value)
    assert caught.value.exit_code == 2  # a configuration error for the CLI


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cp1251.md"
    path.write_bytes("---\ntitle: x\n---\nСчёт\n".encode("cp1251"))
    with pytest.raises(KbError, match=r"cp1251\.md line 4: not UTF-8"):
        parse_article(path)


def test_the_file_name_must_be_a_plain_id(tmp_path: Path) -> None:
    path = write(tmp_path, "Сброс пароля", PASSWORD_RU)
    with pytest.raises(KbError, match="file name is the article ID"):
        parse_article(path)


def test_check_kb_lists_every_bad_file_and_skips_readme_and_drafts(kb_dir: Path) -> None:
    assert check_kb(kb_dir) == []
    write(kb_dir, "broken", "---\ntitle: x\nlanguage: fr\n---\nbody\n")
    write(kb_dir, "open", "---\ntitle: x\n")
    problems = check_kb(kb_dir)
    assert problems == [
        f"{kb_dir / 'broken.md'} line 3: language must be en or ru (or left out for every "
        "language), got 'fr'",
        f"{kb_dir / 'open.md'} line 1: the front matter is never closed: add a '---' line after it",
    ]
    assert "not found" in check_kb(kb_dir / "missing")[0]


def test_the_shipped_example_articles_are_valid() -> None:
    assert check_kb(ROOT / "kb") == []
    kb = load_kb(ROOT / "kb")
    assert {a.language for a in kb.articles} == {"en", "ru"}
    found = suggest(kb, "Добрый день! Не пришёл счёт за март, пришлите на почту бухгалтерии", "ru")
    assert slugs(found)[:1] == ["invoices-ru"]


def test_load_is_strict_for_commands_and_lenient_for_intake(
    kb_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(kb_dir, "broken", "---\ntitle: x\nkeywords a\n---\nbody\n")
    with pytest.raises(KbError, match=r"broken\.md line 3"):
        load_kb(kb_dir)
    with caplog.at_level(logging.WARNING, logger="mailsupport.kb"):
        kb = load_kb(kb_dir, strict=False)
        load_kb(kb_dir, strict=False)
    assert kb.get("broken") is None and kb.get("invoices-ru") is not None
    assert [(p.path.name, p.line) for p in kb.problems] == [("broken.md", 3)]
    warnings = [r for r in caplog.records if "broken.md" in r.getMessage()]
    assert len(warnings) == 1  # once per change of the folder, not once per message
    assert slugs(suggest(kb, "забыл пароль, не могу войти", "ru")) == ["password-reset-ru"]


def test_the_cache_notices_added_and_edited_articles(kb_dir: Path) -> None:
    first = load_kb(kb_dir)
    assert load_kb(kb_dir) is first  # nothing changed: the index is reused
    path = kb_dir / "invoices-en.md"
    path.write_text(INVOICES_EN.replace("Where to find", "Finding"), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    edited = load_kb(kb_dir)
    assert edited is not first
    assert edited.get("invoices-en").title == "Finding your invoices"  # type: ignore[union-attr]
    write(kb_dir, "vpn", "---\ntitle: VPN\nkeywords: vpn\n---\nConnect.\n")
    assert load_kb(kb_dir).get("vpn") is not None


# ------------------------------------------------------------------------------------------
# Matching
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["счёт", "счет", "счета", "счетов", "счету", "Счётом", "СЧЕТАХ"])
def test_russian_inflections_find_the_article(kb_dir: Path, form: str) -> None:
    assert slugs(search(load_kb(kb_dir), form))[:1] == ["invoices-ru"]


@pytest.mark.parametrize(
    "message",
    [
        "Не пришёл счёт за март",
        "Не вижу счетов в личном кабинете",
        "Пришлите, пожалуйста, счета и акты за квартал",
        "По счету 123 ошибка в оплате",
    ],
)
def test_a_russian_message_gets_the_russian_article(kb_dir: Path, message: str) -> None:
    assert slugs(suggest(load_kb(kb_dir), message, "ru")) == ["invoices-ru"]


def test_yo_and_ye_are_the_same_letter(kb_dir: Path) -> None:
    kb = load_kb(kb_dir)
    with_yo, with_ye = search(kb, "не пришёл счёт"), search(kb, "не пришел счет")
    assert [(f.article.slug, f.score) for f in with_yo] == [
        (f.article.slug, f.score) for f in with_ye
    ]
    assert with_yo and with_yo[0].article.slug == "invoices-ru"


@pytest.mark.parametrize("form", ["reset", "resetting", "resets", "Reset"])
def test_english_words_are_stemmed(kb_dir: Path, form: str) -> None:
    found = search(load_kb(kb_dir), form)
    assert slugs(found) == ["password-reset-en"]
    assert found[0].matched == (form.lower(),)


def test_keywords_and_title_beat_a_passing_mention_in_a_body(kb_dir: Path) -> None:
    kb = load_kb(kb_dir)
    found = search(kb, "password")
    assert slugs(found) == ["password-reset-en", "profile-picture-en"]
    assert found[0].score > found[1].score
    assert (found[0].key_matches, found[1].key_matches) == (1, 0)
    # More words of its body do not make the passing mention win, nor get it suggested.
    text = "The password of my account and my email"
    found = search(kb, text)
    assert slugs(found) == ["password-reset-en", "profile-picture-en", "invoices-en"]
    assert found[1].matched == ("password", "account", "email")
    assert slugs(suggest(kb, text, "en")) == ["password-reset-en"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Добрый день, хотел бы узнать о ваших тарифах для компании из 50 человек", "ru"),
        ("Do you have an API for exporting reports? Thanks", "en"),
        ("Hi, my phone is broken, what should I do", "en"),
        ("password", "en"),  # one word, even a keyword: not enough to mail an answer
        ("account", "en"),  # one weak word, in several bodies
        ("Здравствуйте, спасибо! С уважением, Иван", "ru"),  # nothing but courtesy
        ("", "en"),
    ],
)
def test_unrelated_text_gets_no_suggestion(kb_dir: Path, text: str, language: str) -> None:
    assert suggest(load_kb(kb_dir), text, language) == []


def test_a_long_message_that_mentions_a_topic_in_passing_gets_no_suggestion() -> None:
    kb = load_kb(ROOT / "kb")
    text = """Hello team,

we are evaluating your product for our company of about 200 people. Could you tell me whether
you support single sign-on with our identity provider, and whether our users can keep their
current password policy? We would also need an export of all data once a month, and the
contract should be signed by our legal department. Our previous provider sent everything by
email, including the link to the reports, which was handy. We also use a VPN in the office.

Best regards,
Anna Smith
Head of IT, Example Corp
Phone: +1 555 1234"""
    assert suggest(kb, text, "en") == []
    # ... while a long message about the problem still gets its article.
    text = """Hello, yesterday I tried to log in to the dashboard from my new laptop at the office
but it told me my password is wrong. I then clicked forgot password but the email never came.
I checked spam. This is urgent as I need to send reports to my manager today.
Thanks, John Miller
Sales Manager | Example Trading Ltd | +44 20 7946 0000"""
    assert slugs(suggest(kb, text, "en")) == ["password-reset-en"]


def test_suggestions_are_in_the_customers_language_or_any(kb_dir: Path) -> None:
    kb = load_kb(kb_dir)
    assert slugs(suggest(kb, "забыл пароль, как сбросить", "ru")) == ["password-reset-ru"]
    assert slugs(suggest(kb, "forgot my password, how to reset it", "en")) == ["password-reset-en"]
    # English words in a Russian customer's mail do not bring English articles.
    assert slugs(suggest(kb, "forgot password reset", "ru")) == []
    # An article without a language serves everyone.
    assert slugs(suggest(kb, "Сбой? Какой статус сервиса?", "ru")) == ["status"]
    assert slugs(suggest(kb, "Is there an outage? What is the status?", "en")) == ["status"]
    assert slugs(search(kb, "password", language="ru")) == []


def test_at_most_three_suggestions_best_first(tmp_path: Path) -> None:
    directory = tmp_path / "kb"
    for n in range(1, 6):
        # Article n has n of the message's words in its keywords: n ranks above n-1.
        keywords = ", ".join(["invoice", "refund", "receipt", "charge", "card"][:n])
        write(directory, f"a{n}", f"---\ntitle: Billing {n}\nkeywords: {keywords}\n---\nText.\n")
    kb = load_kb(directory)
    text = "invoice refund receipt charge card billing"
    assert slugs(suggest(kb, text, "en")) == ["a5", "a4", "a3"]
    assert slugs(suggest(kb, text, "en", limit=1)) == ["a5"]
    scores = [f.score for f in suggest(kb, text, "en", limit=5)]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert suggest(kb, text, "en", threshold=1.01) == []


# ------------------------------------------------------------------------------------------
# What intake and `reply --kb` call
# ------------------------------------------------------------------------------------------


def fake_settings(**values: Any) -> Settings:
    return SimpleNamespace(**values)  # type: ignore[return-value]


def test_suggestions_for_settings_never_stop_intake(
    kb_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "Не пришёл счёт за март"
    assert suggestions_for(fake_settings(), text, "ru") == []  # no kb_dir: no knowledge base
    assert suggestions_for(fake_settings(kb_dir=""), text, "ru") == []
    found = suggestions_for(fake_settings(kb_dir=str(kb_dir)), text, "ru")
    assert slugs(found) == ["invoices-ru"]
    assert suggestions_for(fake_settings(kb_dir=str(kb_dir), kb_suggestions=0), text, "ru") == []
    assert suggestions_for(fake_settings(kb_dir=str(kb_dir), kb_threshold=1.01), text, "ru") == []
    with caplog.at_level(logging.WARNING, logger="mailsupport.kb"):
        missing = fake_settings(kb_dir=str(kb_dir / "gone"))
        assert suggestions_for(missing, text, "ru") == []
    assert "knowledge base folder not found" in caplog.text
    write(kb_dir, "broken", "---\nno front matter\n")
    assert slugs(suggestions_for(fake_settings(kb_dir=str(kb_dir)), text, "ru")) == ["invoices-ru"]


def test_find_article_for_reply(kb_dir: Path) -> None:
    settings = fake_settings(kb_dir=str(kb_dir))
    assert find_article(settings, "invoices-ru").title == "Где найти счета и акты"
    assert find_article(settings, " Invoices-RU.md ").slug == "invoices-ru"
    with pytest.raises(NotFoundError, match="did you mean invoices-ru"):
        find_article(settings, "invoice-ru")
    write(kb_dir, "broken", "---\ntitle: x\n---\n")
    with pytest.raises(KbError, match=r"broken\.md line 3: no article text"):
        find_article(settings, "broken")
    with pytest.raises(ConfigError, match="set MAILSUPPORT_KB_DIR"):
        find_article(fake_settings(), "invoices-ru")


def test_article_text_is_plain_mail(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "markdown",
        "---\ntitle: Reset your password\n---\n"
        "# Reset your password\n\n"
        "## Steps ##\n\n"
        "* Open **Settings** and choose _Security_.\n"
        '* Click *Reset*, see [the guide](https://example.com/guide "Guide").\n'
        "1. Write to <mailto:help@example.com> or [help@example.com](mailto:help@example.com).\n"
        "\n"
        "> Note: links expire after ~~two~~ one hour.\n\n"
        "Run `reset --all`; keep snake_case_names and 2*3*4 as they are, and \\*stars\\*.\n\n"
        "```\n**not touched** in code\n```\n",
    )
    text = article_text(parse_article(path))
    assert text == (
        "Reset your password\n\n"
        "Steps\n\n"
        "- Open Settings and choose Security.\n"
        "- Click Reset, see the guide (https://example.com/guide).\n"
        "1. Write to help@example.com or help@example.com.\n"
        "\n"
        "  Note: links expire after two one hour.\n\n"
        "Run reset --all; keep snake_case_names and 2*3*4 as they are, and *stars*.\n\n"
        "**not touched** in code\n"
    )
    assert plain_text("[https://x.org](https://x.org)") == "https://x.org"


def test_the_shipped_articles_read_well_as_text() -> None:
    article = load_kb(ROOT / "kb").get("vpn-login-en")
    assert article is not None
    text = article_text(article)
    assert text.startswith("Cannot connect to the VPN\n\n")
    assert "the downloads page (https://example.com/downloads)" in text
    assert "**" not in text


# ------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------

needs_setting = pytest.mark.skipif(
    "kb_dir" not in Settings.model_fields,
    reason="needs Settings.kb_dir (MAILSUPPORT_KB_DIR), which the lead adds to config.py",
)


@pytest.fixture
def run(kb_dir: Path):  # type: ignore[no-untyped-def]
    def invoke(*args: str, kb: Path | None = kb_dir):  # type: ignore[no-untyped-def]
        return cli({"MAILSUPPORT_KB_DIR": str(kb)} if kb else {}, "kb", *args)

    return invoke


def test_cli_without_a_knowledge_base_names_the_setting(run) -> None:  # type: ignore[no-untyped-def]
    for args in (["list"], ["show", "invoices-en"], ["search", "invoice"]):
        result = run(*args, kb=None)
        assert result.exit_code == 2
        assert result.stderr == (
            "mailsupport: no knowledge base: set MAILSUPPORT_KB_DIR to the folder of articles\n"
        )


@needs_setting
def test_cli_list(run, kb_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = run("list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["invoices-en", "en", "Where", "to", "find", "your", "invoices"]
    assert lines[1].strip() == "invoice, billing, receipt"
    assert any(line.startswith("status ") and " * " in line for line in lines)
    listed = json.loads(run("list", "--json").stdout)
    assert [a["slug"] for a in listed] == sorted(ARTICLES)
    assert listed[-1] == {
        "slug": "status",
        "language": None,
        "title": "Service status page",
        "keywords": ["status", "outage", "downtime", "статус", "сбой"],
        "path": str(kb_dir / "status.md"),
    }


@needs_setting
def test_cli_show(run) -> None:  # type: ignore[no-untyped-def]
    result = run("show", "password-reset-en")
    assert result.exit_code == 0, result.output
    assert "keywords: password, reset password" in result.stdout
    assert "Choose Forgot password? on the sign-in page" in result.stdout
    shown = json.loads(run("show", "password-reset-en", "--json").stdout)
    assert shown["body"].startswith("Choose **Forgot password?**")
    assert shown["text"].startswith("How to reset your password\n\nChoose Forgot password?")
    missing = run("show", "password-reset")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("mailsupport: no article 'password-reset' in the knowledge")
    assert "did you mean password-reset-en, password-reset-ru?" in missing.stderr


@needs_setting
def test_cli_search(run) -> None:  # type: ignore[no-untyped-def]
    result = run("search", "--language", "ru", "не", "пришёл", "счёт")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("* 0.") and "invoices-ru" in first and "(пришел, счет)" in first
    found = json.loads(run("search", "счетов", "--json").stdout)
    assert found[0]["slug"] == "invoices-ru"
    assert 0 < found[0]["score"] <= 1 and found[0]["matched"] == ["счетов"]
    assert found[0]["suggested"] is False  # one word: found, but not worth a suggestion
    assert len(json.loads(run("search", "password", "--limit", "1", "--json").stdout)) == 1
    none = run("search", "quantum", "chromodynamics")
    assert none.exit_code == 1
    assert none.stderr == "mailsupport: no article matches 'quantum chromodynamics'\n"
    assert run("search", "quantum", "--json").exit_code == 1
    assert run("search", "the").exit_code == 2
    bad = run("search", "--language", "de", "x")
    assert bad.exit_code == 2 and "unknown language 'de'" in bad.stderr


@needs_setting
def test_cli_refuses_a_broken_article_with_its_file_and_line(run, kb_dir: Path) -> None:  # type: ignore[no-untyped-def]
    path = write(kb_dir, "broken", "---\ntitle: x\nkeywords a, b\n---\nbody\n")
    for args in (["list"], ["show", "status"], ["search", "status"]):
        result = run(*args)
        assert result.exit_code == 2
        assert result.stderr == (
            f"mailsupport: {path} line 3: expected 'name: value' in the front matter, "
            "got 'keywords a, b'\n"
        )
