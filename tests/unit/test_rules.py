"""Classification rules: the file format, its checks (with line numbers), and matching."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsupport.errors import ConfigError
from mailsupport.parsing import parse
from mailsupport.rules import classify, load_rules, parse_rules
from tests.support.mailfactory import make_message
from tests.support.paths import MAIL

RULES = """
# Invoices go to billing, whatever the language.
[[rule]]
name = "invoices"
if.text = ["счёт", "invoice", "оплат"]
then.queue = "billing"
then.type = "billing"
then.tags = ["invoice"]

[[rule]]
name = "big customer"
if.from_domain = "bigcorp.example"
then.priority = "high"
then.tags = ["vip"]

[[rule]]
name = "sales address"
if.to = ["sales@example.com"]
then.queue = "sales"
then.line = 2

[[rule]]
name = "outage"
if.subject_regex = '(?i)\\b(down|не работает|недоступ)'
if.header = { "X-Priority" = "^1" }
then.priority = "urgent"
then.type = "incident"
then.assignee = "Oleg Ivanov"
stop = true

[[rule]]
name = "after stop"
if.subject = "не работает"
then.queue = "never"
"""


def classified(raw: bytes, rules: str = RULES) -> dict[str, object]:
    result = classify(parse_rules(rules), parse(raw))
    return {**result.changes(), "matched": [name for name, _ in result.matched]}


def test_russian_keywords_match_inflected_words_and_yo() -> None:
    raw = make_message(subject="Где мой счет?", body="Оплатил вчера, а счета всё нет.")
    assert classified(raw) == {
        "queue": "billing", "type": "billing", "tags": ["invoice"], "matched": ["invoices"],
    }  # fmt: skip


def test_a_keyword_matches_the_beginning_of_a_word_only() -> None:
    # "invoice" must not match inside "reinvoiced"... but "invoices" is fine.
    assert classified(make_message(subject="We reinvoiced it"))["matched"] == []
    assert classified(make_message(subject="Two invoices missing"))["matched"] == ["invoices"]


def test_koi8r_mail_is_classified_by_its_decoded_text() -> None:
    raw = (MAIL / "koi8r.eml").read_bytes()
    result = classify(parse_rules('[[rule]]\nif.text = ["реквизит"]\nthen.queue = "ru"\n'),
                      parse(raw))  # fmt: skip
    assert result.changes() == {"queue": "ru"}


def test_later_rules_override_and_tags_add_up() -> None:
    raw = make_message(sender="ceo@bigcorp.example", subject="Invoice for March")
    assert classified(raw) == {
        "queue": "billing", "type": "billing", "priority": "high",
        "tags": ["invoice", "vip"], "matched": ["invoices", "big customer"],
    }  # fmt: skip


def test_subdomains_count_for_from_domain_but_lookalikes_do_not() -> None:
    assert classified(make_message(sender="a@eu.bigcorp.example"))["matched"] == ["big customer"]
    assert classified(make_message(sender="a@notbigcorp.example"))["matched"] == []


def test_the_address_it_was_sent_to_picks_the_queue() -> None:
    direct = make_message(to="Sales <SALES@example.com>")
    assert classified(direct)["queue"] == "sales" and classified(direct)["line"] == 2
    forwarded = make_message(
        to="all@example.com", extra_headers={"Delivered-To": "sales@example.com"}
    )
    assert classified(forwarded)["queue"] == "sales"


def test_every_condition_of_a_rule_must_hold_and_stop_ends_the_run() -> None:
    down = make_message(subject="Сайт не работает", extra_headers={"X-Priority": "1 (Highest)"})
    assert classified(down) == {
        "priority": "urgent", "type": "incident", "assignee": "Oleg Ivanov", "matched": ["outage"],
    }  # fmt: skip
    no_header = make_message(subject="Сайт не работает")
    assert classified(no_header) == {"queue": "never", "matched": ["after stop"]}


def test_reasons_say_why() -> None:
    raw = make_message(sender="ceo@bigcorp.example", subject="invoice")
    result = classify(parse_rules(RULES), parse(raw))
    assert result.matched == [
        ("invoices", ["text has 'invoice'"]),
        ("big customer", ["from domain bigcorp.example"]),
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[rule]]\nname = "a"\nif.subjet = ["x"]\nthen.queue = "q"\n',
         "rules.toml, line 3: unknown condition 'subjet'"),
        ('[[rule]]\nname = "a"\nif.subject = ["x"]\n\nthen.priority = "asap"\n',
         "rules.toml, line 5: then.priority: unknown priority 'asap'"),
        ('[[rule]]\nif.subject = ["x"]\nthen.queue = "q"\n[[rule]]\nif.subject_regex = "(("\n'
         'then.queue = "q"\n', "rules.toml, line 5: if.subject_regex: bad regular expression"),
        ('[[rule]]\nname = "a"\nif.subject = ["x"]\n', "line 1: rule 'a' needs actions"),
        ('[[rule]]\nname = "a"\nthen.queue = "q"\n', "line 1: rule 'a' needs conditions"),
        ('[[rule]]\nname = "a"\nif.subject = []\nthen.queue = "q"\n', "give a string or a list"),
        ('[[rule]]\nname = "a"\nif.subject = ["x"]\nthen.queue = "two words"\n', "one word"),
        ('[[rule]]\nname = "a"\nif.subject = ["x"]\nthen.line = 0\n', "from 1"),
        ('[[rule]\nname = "a"\n', "rules.toml: Expected ']]'"),
        ('queues = 1\n', "rules.toml, line 1: unknown top-level key 'queues'"),
        ('[[rule]]\nname = "a"\nif.subject = "x"\nthen.queue = "q"\n[[rule]]\nname = "a"\n'
         'if.subject = "y"\nthen.queue = "r"\n', "line 5: rule name 'a' is used twice"),
        ('[[rule]]\nname = "a"\nif.subject = "x"\nthen.status = "open"\n',
         "line 4: then.status: a rule sets the status 'spam' or 'closed'"),
        ('[[rule]]\nname = "a"\nif.subject = "x"\nthen.ack = "no"\n',
         "line 4: then.ack: give true or false"),
        ('[[rule]]\nname = "a"\nif.subject = "x"\nthen.drop = 1\n',
         "line 4: then.drop: give true or false"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_the_line_and_the_reason(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_rules(text, "rules.toml")
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_rules_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILSUPPORT_RULES_FILE"):
        load_rules(tmp_path / "missing.toml")
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    assert len(load_rules(tmp_path / "rules.toml")) == 5


def test_handling_actions_and_which_rule_set_them() -> None:
    rules = parse_rules(
        '[[rule]]\nname = "quiet"\nif.subject = "x"\nthen.ack = false\nthen.notify = false\n'
        '[[rule]]\nname = "junk"\nif.subject = "x"\nthen.status = "spam"\nthen.drop = true\n'
    )
    result = classify(rules, parse(make_message(subject="x")))
    assert result.changes() == {"status": "spam", "ack": False, "notify": False, "drop": True}
    assert result.decided_by == {
        "ack": "quiet",
        "notify": "quiet",
        "status": "junk",
        "drop": "junk",
    }
