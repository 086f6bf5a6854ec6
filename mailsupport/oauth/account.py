"""Which account signs in with OAuth2, through which provider and flow: from the settings.

Pure: nothing here talks to a server. Every mistake a person must fix is one ConfigError
line naming the setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailsupport.config import Settings
from mailsupport.errors import ConfigError

Service = Literal["imap", "smtp"]
Flow = Literal["client-credentials", "device-code", "service-account"]

_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"
# Tenants that name no directory: fine for a person's sign-in, not for an application's.
_NO_DIRECTORY = {"organizations", "common", "consumers", ""}
_DEFAULT_SCOPES = {
    ("microsoft", "client-credentials"): "https://outlook.office365.com/.default",
    ("microsoft", "device-code"): (
        "offline_access https://outlook.office.com/IMAP.AccessAsUser.All "
        "https://outlook.office.com/SMTP.Send"
    ),
    ("google", "service-account"): "https://mail.google.com/",
}


@dataclass(frozen=True)
class OAuthAccount:
    """One mailbox login signed in with OAuth2. Secrets stay out of repr."""

    login: str  # the mailbox, as the IMAP/SMTP server knows it (XOAUTH2's user)
    provider: str
    flow: Flow
    client_id: str
    client_secret: str = field(repr=False)
    scopes: tuple[str, ...]
    token_url: str
    device_url: str
    key_file: str

    @property
    def key(self) -> str:
        """Names the stored token: the same login through another application is another."""
        return f"{self.provider}:{self.client_id}:{self.login.lower()}"

    @property
    def describe(self) -> str:
        return f"OAuth2 {self.provider} {self.flow} as {self.login}"


def account_for(settings: Settings, service: Service) -> OAuthAccount | None:
    """The OAuth2 account `service` signs in with; None when it signs in with a password."""
    auth = settings.imap_auth if service == "imap" else settings.smtp_auth
    if auth != "oauth2":
        return None
    login = settings.imap_user
    if service == "smtp":
        login = settings.smtp_user or settings.imap_user
    if not login:
        key = "IMAP_USER" if service == "imap" else "SMTP_USER (or IMAP_USER)"
        raise ConfigError(f"MAILSUPPORT_{key} is not set: name the mailbox to sign in as")
    provider = settings.oauth_provider
    if not provider:
        raise ConfigError(
            f"MAILSUPPORT_{service.upper()}_AUTH=oauth2 needs MAILSUPPORT_OAUTH_PROVIDER: "
            "microsoft, google or generic"
        )
    flow = _flow(settings)
    _check_flow(settings, provider, flow)
    token_url, device_url = _endpoints(settings, provider)
    if flow == "device-code" and not device_url:
        raise ConfigError(
            "the device-code flow needs MAILSUPPORT_OAUTH_DEVICE_URL: the server's device "
            "authorization endpoint"
        )
    scopes = settings.oauth_scopes or _DEFAULT_SCOPES.get((provider, flow), "")
    return OAuthAccount(
        login=login,
        provider=provider,
        flow=flow,
        client_id=settings.oauth_client_id,
        client_secret=settings.oauth_client_secret.get_secret_value(),
        scopes=tuple(scopes.replace(",", " ").split()),
        token_url=token_url,
        device_url=device_url,
        key_file=settings.oauth_key_file,
    )


def accounts(settings: Settings) -> list[tuple[Service, OAuthAccount]]:
    """Every service that signs in with OAuth2, with its account."""
    found: list[tuple[Service, OAuthAccount]] = []
    for service in ("imap", "smtp"):
        account = account_for(settings, service)
        if account is not None:
            found.append((service, account))
    return found


def _flow(settings: Settings) -> Flow:
    if settings.oauth_flow:
        return settings.oauth_flow
    if settings.oauth_key_file:
        return "service-account"
    if settings.oauth_client_secret.get_secret_value():
        return "client-credentials"
    return "device-code"


def _check_flow(settings: Settings, provider: str, flow: Flow) -> None:
    if flow == "service-account":
        if provider != "google":
            raise ConfigError(
                "MAILSUPPORT_OAUTH_FLOW=service-account is Google's: set "
                "MAILSUPPORT_OAUTH_PROVIDER=google, or choose client-credentials or device-code"
            )
        if not settings.oauth_key_file:
            raise ConfigError(
                "the service-account flow needs MAILSUPPORT_OAUTH_KEY_FILE: the service "
                "account's JSON key"
            )
        return
    if provider == "google":
        raise ConfigError(
            f"Google does not allow the mail scope with the {flow} flow: use "
            "MAILSUPPORT_OAUTH_FLOW=service-account with MAILSUPPORT_OAUTH_KEY_FILE"
        )
    if not settings.oauth_client_id:
        raise ConfigError(
            "MAILSUPPORT_OAUTH_CLIENT_ID is not set: the application (client) ID registered "
            "with the OAuth2 server"
        )
    if flow == "client-credentials":
        if not settings.oauth_client_secret.get_secret_value():
            raise ConfigError("the client-credentials flow needs MAILSUPPORT_OAUTH_CLIENT_SECRET")
        if provider == "microsoft" and settings.oauth_tenant.lower() in _NO_DIRECTORY:
            raise ConfigError(
                "the client-credentials flow signs in to one directory: set "
                "MAILSUPPORT_OAUTH_TENANT to its tenant ID or domain"
            )


def _endpoints(settings: Settings, provider: str) -> tuple[str, str]:
    token_url, device_url = settings.oauth_token_url, settings.oauth_device_url
    if provider == "microsoft":
        base = _MICROSOFT.format(tenant=settings.oauth_tenant or "organizations")
        return token_url or base + "token", device_url or base + "devicecode"
    if provider == "google":
        return token_url, device_url  # "" = the key file's token_uri
    if not token_url:
        raise ConfigError(
            "MAILSUPPORT_OAUTH_PROVIDER=generic needs MAILSUPPORT_OAUTH_TOKEN_URL: the "
            "server's token endpoint"
        )
    return token_url, device_url
