"""Which account signs in how (mailsupport/oauth/account.py): pure, from the settings."""

from __future__ import annotations

from typing import Any

import pytest

from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.oauth.account import account_for, accounts

BASE = {"imap_user": "support@example.com", "imap_auth": "oauth2"}


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **{**BASE, **values})  # type: ignore[call-arg]


def test_password_login_has_no_account() -> None:
    plain = Settings(_env_file=None, imap_user="support@example.com")  # type: ignore[call-arg]
    assert account_for(plain, "imap") is None
    assert account_for(plain, "smtp") is None
    assert accounts(plain) == []


def test_microsoft_app_with_a_secret_uses_client_credentials_in_its_tenant() -> None:
    account = account_for(
        settings(
            oauth_provider="microsoft",
            oauth_client_id="app-1",
            oauth_client_secret="s3cret",
            oauth_tenant="contoso.example",
        ),
        "imap",
    )
    assert account is not None
    assert account.flow == "client-credentials"
    assert account.scopes == ("https://outlook.office365.com/.default",)
    assert account.token_url == (
        "https://login.microsoftonline.com/contoso.example/oauth2/v2.0/token"
    )
    assert account.login == "support@example.com"
    assert "s3cret" not in repr(account)


def test_microsoft_without_a_secret_is_a_persons_device_code_sign_in() -> None:
    account = account_for(settings(oauth_provider="microsoft", oauth_client_id="app-1"), "imap")
    assert account is not None
    assert account.flow == "device-code"
    assert "offline_access" in account.scopes
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in account.scopes
    assert account.device_url.endswith("/organizations/oauth2/v2.0/devicecode")


def test_smtp_signs_in_as_the_imap_user_unless_told_otherwise() -> None:
    values = {"oauth_provider": "generic", "oauth_client_id": "c", "smtp_auth": "oauth2"}
    values |= {"oauth_token_url": "http://127.0.0.1:1/token", "oauth_device_url": "http://x/d"}
    same = account_for(settings(**values), "smtp")
    other = account_for(settings(**values, smtp_user="sender@example.com"), "smtp")
    assert same is not None and other is not None
    assert same.login == "support@example.com"
    assert other.login == "sender@example.com"
    assert same.key != other.key  # two mailboxes: two stored sign-ins
    assert [service for service, _ in accounts(settings(**values))] == ["imap", "smtp"]


def test_a_key_file_means_a_google_service_account() -> None:
    account = account_for(settings(oauth_provider="google", oauth_key_file="/k.json"), "imap")
    assert account is not None
    assert account.flow == "service-account"
    assert account.scopes == ("https://mail.google.com/",)


def test_scopes_given_replace_the_default() -> None:
    account = account_for(
        settings(
            oauth_provider="generic",
            oauth_client_id="c",
            oauth_client_secret="s",
            oauth_token_url="http://127.0.0.1:1/token",
            oauth_scopes="mail.read, mail.send",
        ),
        "imap",
    )
    assert account is not None
    assert account.scopes == ("mail.read", "mail.send")


@pytest.mark.parametrize(
    ("values", "names"),
    [
        ({}, "MAILSUPPORT_OAUTH_PROVIDER"),
        ({"oauth_provider": "microsoft"}, "MAILSUPPORT_OAUTH_CLIENT_ID"),
        (
            {"oauth_provider": "microsoft", "oauth_client_id": "c", "oauth_client_secret": "s"},
            "MAILSUPPORT_OAUTH_TENANT",
        ),
        ({"oauth_provider": "generic", "oauth_client_id": "c"}, "MAILSUPPORT_OAUTH_TOKEN_URL"),
        (
            {"oauth_provider": "generic", "oauth_client_id": "c", "oauth_token_url": "http://t"},
            "MAILSUPPORT_OAUTH_DEVICE_URL",
        ),
        ({"oauth_provider": "google"}, "service-account"),
        ({"oauth_provider": "google", "oauth_flow": "service-account"}, "OAUTH_KEY_FILE"),
        (
            {"oauth_provider": "microsoft", "oauth_flow": "service-account"},
            "MAILSUPPORT_OAUTH_PROVIDER=google",
        ),
        (
            {"oauth_provider": "microsoft", "oauth_client_id": "c", "imap_user": ""},
            "MAILSUPPORT_IMAP_USER",
        ),
    ],
)
def test_each_mistake_names_the_setting_to_fix(values: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        account_for(settings(**values), "imap")


def test_choices_are_read_in_any_case() -> None:
    loud = settings(imap_auth="OAuth2", oauth_provider="Microsoft", oauth_client_id="c")
    account = account_for(loud, "imap")
    assert account is not None and account.provider == "microsoft"


def test_the_client_secret_is_blanked_out_of_log_lines() -> None:
    from mailsupport.logs import secrets_of

    configured = settings(oauth_provider="microsoft", oauth_client_secret="Xy7~secret.value")
    assert "Xy7~secret.value" in secrets_of(configured)
