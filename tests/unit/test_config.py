"""Settings: sources, defaults and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailsupport.config import load_settings
from mailsupport.errors import ConfigError


def test_defaults_put_sqlite_in_the_data_directory() -> None:
    settings = load_settings()
    assert settings.data_dir == Path("mailsupport-data")
    assert settings.db_url.startswith("sqlite:///")
    assert settings.db_url.endswith("mailsupport-data/mailsupport.db")
    assert settings.max_message_bytes == 25 * 1024 * 1024
    assert settings.format_tag(12) == "[#12]"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSUPPORT_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("MAILSUPPORT_MAX_MESSAGE_BYTES", "1000")
    settings = load_settings()
    assert settings.db_url == "postgresql+psycopg://u@h/db"
    assert settings.max_message_bytes == 1000


def test_settings_env_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "settings.env").write_text("MAILSUPPORT_SUPPORT_NAME=Helpdesk\n")
    assert load_settings().support_name == "Helpdesk"


def test_config_option_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "a.env"
    explicit.write_text("MAILSUPPORT_SUPPORT_NAME=From option\n")
    via_env = tmp_path / "b.env"
    via_env.write_text("MAILSUPPORT_SUPPORT_NAME=From variable\n")
    monkeypatch.setenv("MAILSUPPORT_CONFIG", str(via_env))
    assert load_settings().support_name == "From variable"
    assert load_settings(str(explicit)).support_name == "From option"


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(str(tmp_path / "nope.env"))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MAILSUPPORT_MAX_MESSAGE_BYTES", "lots", "MAILSUPPORT_MAX_MESSAGE_BYTES"),
        ("MAILSUPPORT_MAX_MESSAGE_BYTES", "0", "MAILSUPPORT_MAX_MESSAGE_BYTES"),
        ("MAILSUPPORT_TICKET_TAG", "[#]", "MAILSUPPORT_TICKET_TAG: must contain {number}"),
        ("MAILSUPPORT_SUPPORT_ADDRESS", "not an address", "MAILSUPPORT_SUPPORT_ADDRESS"),
        ("MAILSUPPORT_LOG_LEVEL", "LOUD", "MAILSUPPORT_LOG_LEVEL"),
    ],
)
def test_invalid_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_custom_tag_format_is_matched() -> None:
    settings = load_settings(ticket_tag="{Ticket {number}}")
    assert settings.format_tag(5) == "{Ticket 5}"
    match = settings.tag_pattern.search("Re: {Ticket 5} printer")
    assert match is not None and match.group(1) == "5"


def test_our_addresses_include_aliases() -> None:
    settings = load_settings(support_address="Help@Example.com", support_aliases="a@x.org, B@x.org")
    assert settings.our_addresses == {"help@example.com", "a@x.org", "b@x.org"}
