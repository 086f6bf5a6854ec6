"""`mailsupport auth login | status | logout`, as plain functions the CLI calls.

IMAP and SMTP share one stored sign-in when they sign in as the same mailbox through the
same application (the usual case: one grant whose scopes cover both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mailsupport.config import Settings
from mailsupport.errors import ConfigError
from mailsupport.oauth import grants
from mailsupport.oauth.account import OAuthAccount, Service, accounts
from mailsupport.oauth.grants import DeviceCode, Grant
from mailsupport.oauth.tokens import forget_keepers
from mailsupport.store import tokens as rows
from mailsupport.store.db import Store
from mailsupport.store.models import OAuthToken


@dataclass(frozen=True)
class SignIn:
    """One stored sign-in and the services that use it."""

    account: OAuthAccount
    services: tuple[Service, ...]


def sign_ins(settings: Settings) -> list[SignIn]:
    """The configured OAuth2 accounts, one per stored sign-in. ConfigError when the OAuth2
    settings are wrong; an empty list when every service signs in with a password."""
    found: dict[str, SignIn] = {}
    for service, account in accounts(settings):
        known = found.get(account.key)
        services = (*known.services, service) if known else (service,)
        found[account.key] = SignIn(account, services)
    return list(found.values())


def login(
    settings: Settings,
    store: Store,
    show_code: Callable[[OAuthAccount, DeviceCode], None],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[tuple[SignIn, Grant]]:
    """Sign every configured account in anew: a person approves a device code (shown by
    `show_code`), or the application proves its credentials. What the server gives is
    stored at once. ConfigError when nothing signs in with OAuth2."""
    found = sign_ins(settings)
    if not found:
        raise ConfigError(
            "nothing signs in with OAuth2: set MAILSUPPORT_IMAP_AUTH=oauth2 (or SMTP_AUTH) "
            "and the MAILSUPPORT_OAUTH_* settings"
        )
    done = []
    for sign_in in found:
        account = sign_in.account
        timeout = float(settings.imap_timeout)
        if account.flow == "device-code":
            device = grants.start_device_flow(account, timeout)
            show_code(account, device)
            grant = grants.finish_device_flow(account, device, timeout)
            if not grant.refresh_token:
                raise ConfigError(
                    f"the OAuth2 server gave no refresh token for {account.login}: add the "
                    "offline_access scope to MAILSUPPORT_OAUTH_SCOPES"
                )
        elif account.flow == "client-credentials":
            grant = grants.client_credentials(account, timeout)
        else:
            grant = grants.service_account(account, timeout)
        rows.signed_in(store, account, grant, now())
        done.append((sign_in, grant))
    forget_keepers()
    return done


def logout(settings: Settings, store: Store, everything: bool = False) -> int:
    """Forget the stored sign-ins of the configured accounts (all stored ones with
    `everything`); how many were stored."""
    keys = None if everything else [s.account.key for s in sign_ins(settings)]
    forgotten = rows.forget(store, keys)
    forget_keepers()
    return forgotten


def describe(settings: Settings, store: Store) -> list[dict[str, Any]]:
    """Each configured sign-in as JSON-ready data (never a token): "login", "services",
    "provider", "flow", "state" (signed-in, expired, revoked, not-signed-in), and the ISO
    times "expires_at", "refreshed_at", "signed_in_at" (a mail server last took a token),
    "last_error_at", with "last_error"."""
    described = []
    for sign_in in sign_ins(settings):
        account = sign_in.account
        row = rows.load(store, account.key)
        described.append(
            {
                "login": account.login,
                "services": list(sign_in.services),
                "provider": account.provider,
                "flow": account.flow,
                "state": _state(row, account),
                "expires_at": _iso(row.access_expires_at if row else None),
                "refreshed_at": _iso(row.refreshed_at if row else None),
                "signed_in_at": _iso(row.signed_in_at if row else None),
                "last_error": row.last_error if row else "",
                "last_error_at": _iso(row.last_error_at if row else None),
            }
        )
    return described


def _state(row: OAuthToken | None, account: OAuthAccount) -> str:
    if row is None or (account.flow == "device-code" and not row.refresh_token):
        # Flows without a person sign in by themselves on first use.
        return "not-signed-in" if account.flow == "device-code" else "not-used-yet"
    if row.revoked_at is not None:
        return "revoked"
    if row.access_expires_at is None or row.access_expires_at <= datetime.now(UTC):
        return "expired"  # renewed by the next sign-in
    return "signed-in"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
