"""The mailboxes file and routing by address (mailsupport/mailboxes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailsupport.config import load_settings
from mailsupport.errors import ConfigError, UsageError
from mailsupport.mailboxes import Mailboxes, load_mailboxes
from mailsupport.parsing.message import parse
from tests.support.mailfactory import make_message

DESK = """\
[[mailbox]]
name = "support"
address = "support@example.com"
aliases = ["help@example.com"]
imap_host = "imap.example.com"
imap_user = "support"
imap_password = "s3cret"

[[mailbox]]
name = "billing"
address = "billing@example.com"
display_name = "Example Billing"
queue = "billing"
language = "ru"
imap_host = "imap.example.com"
imap_user = "billing"
imap_password_file = "{password_file}"
smtp_host = "smtp.billing.example.com"
"""


def desk(tmp_path: Path, text: str = DESK, **settings: Any) -> Mailboxes:
    (tmp_path / "billing.pw").write_text("pw-from-file\n")
    path = tmp_path / "mailboxes.toml"
    path.write_text(text.replace("{password_file}", str(tmp_path / "billing.pw")))
    values = {"support_name": "Example Support", "smtp_host": "smtp.example.com", **settings}
    return load_mailboxes(load_settings(mailboxes_file=str(path), **values))


def message(**headers: Any) -> Any:
    extra = {k.replace("_", "-"): v for k, v in headers.items() if k not in ("to", "cc")}
    raw = make_message(
        to=headers.get("to", "Someone <someone@example.org>"),
        cc=headers.get("cc"),
        extra_headers=extra,
    )
    return parse(raw)


def test_each_mailbox_has_its_own_settings_over_the_desks(tmp_path: Path) -> None:
    boxes = desk(tmp_path)
    support, billing = boxes.all
    assert (support.name, billing.name) == ("support", "billing")
    assert support.settings.support_address == "support@example.com"
    assert support.settings.support_name == "Example Support"  # the desk's, not given
    assert support.settings.smtp_host == "smtp.example.com"  # the desk's
    assert billing.settings.smtp_host == "smtp.billing.example.com"  # its own
    assert billing.settings.support_name == billing.display_name == "Example Billing"
    assert billing.settings.language == "ru" and billing.queue == "billing"
    assert billing.settings.imap_password.get_secret_value() == "pw-from-file"
    assert billing.settings.imap_user == "billing" and support.settings.imap_user == "support"
    # Mail from any address of the desk is ours, whichever mailbox looks.
    every = {"support@example.com", "help@example.com", "billing@example.com"}
    assert support.settings.our_addresses == billing.settings.our_addresses == every
    assert load_mailboxes(billing.settings) is boxes  # a mailbox's settings know their desk


def test_without_a_file_the_settings_are_one_mailbox_named_default() -> None:
    settings = load_settings(support_address="desk@example.com", support_aliases="a@example.com")
    boxes = load_mailboxes(settings)
    [box] = boxes.all
    assert box.name == "default" and box.settings is settings
    assert box.addresses == ("desk@example.com", "a@example.com")
    assert boxes.of_ticket("") is box and boxes.of_ticket("gone") is box


def test_routing_by_the_address_it_was_sent_to_in_order(tmp_path: Path) -> None:
    boxes = desk(tmp_path)
    assert boxes.route(message(to="billing@example.com")).name == "billing"
    assert boxes.route(message(to="Help <HELP@example.com>")).name == "support"
    assert boxes.route(message(cc="billing@example.com")).name == "billing"
    # Delivered-To (what the MTA delivered to) wins over what To says.
    delivered = message(to="support@example.com", delivered_to="billing@example.com")
    assert boxes.route(delivered).name == "billing"
    original = message(to="support@example.com", x_original_to="billing@example.com")
    assert boxes.route(original).name == "billing"
    assert boxes.route(message(to="someone@example.org")) is None  # Bcc'd, or a list


def test_plus_addressing_names_a_mailbox_or_falls_back_to_the_address(tmp_path: Path) -> None:
    boxes = desk(tmp_path)
    assert boxes.for_address("support+billing@example.com").name == "billing"  # type: ignore[union-attr]
    assert boxes.for_address("support+urgent@example.com").name == "support"  # type: ignore[union-attr]
    assert boxes.for_address("nobody+billing@example.com") is None


def test_a_named_mailbox_must_exist(tmp_path: Path) -> None:
    boxes = desk(tmp_path)
    assert boxes.named("BILLING").name == "billing"
    with pytest.raises(UsageError, match=r"no mailbox named 'sales'.*support, billing"):
        boxes.named("sales")


BILLING_ADDRESS = 'address = "billing@example.com"'
MISTAKES = [
    (('name = "billing"', 'name = "support"'), r"line 10, mailbox 2, name: 'support' names two"),
    (
        ('queue = "billing"', 'quue = "billing"'),
        r"line 13, mailbox 2, quue: unknown key \(did you mean queue\?\)",
    ),
    (('imap_user = "billing"', 'imap_port = "x"'), r"line 16, mailbox 2, imap_port: .*integer"),
    (
        (BILLING_ADDRESS, 'address = "help@example.com"'),
        r"line 11, mailbox 2, address: help@example.com is an address of mailbox 'support'",
    ),
    ((BILLING_ADDRESS, 'address = "billing"'), r"line 11, mailbox 2, address: needed: a bare"),
    (('language = "ru"', 'language = "de"'), r"line 14, mailbox 2, language: "),
    (('name = "support"', "name = 'support'\n[extra]"), r"mailboxes file .*"),
]


@pytest.mark.parametrize(("change", "expected"), MISTAKES)
def test_a_bad_file_is_one_line_naming_the_line_and_key(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        desk(tmp_path, DESK.replace(*change, 1))


def test_an_unreadable_password_file_names_it(tmp_path: Path) -> None:
    text = DESK.replace("{password_file}", str(tmp_path / "missing.pw"))
    with pytest.raises(ConfigError, match=r"line 17, mailbox 2, imap_password_file: .*missing.pw"):
        desk(tmp_path, text)


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    settings = load_settings(mailboxes_file=str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"MAILSUPPORT_MAILBOXES_FILE .*nope\.toml"):
        load_mailboxes(settings)
