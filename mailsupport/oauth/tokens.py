"""One valid access token per OAuth2 account, shared by every process through the database.

A token is used until REFRESH_MARGIN before it expires, not renewed on every poll (providers
throttle that). When it must be renewed, one process takes the row's lease and asks the
server; the others keep using the old token while it lasts, or wait for the new one. What
the server gives is committed before it is used: a refresh token that rotated is never
only in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from mailsupport.config import Settings
from mailsupport.errors import ConfigError, GrantRevoked, MailSupportError, TemporaryError
from mailsupport.oauth import grants
from mailsupport.oauth.account import OAuthAccount, Service, account_for
from mailsupport.oauth.grants import Grant, revoked_message
from mailsupport.store import tokens as rows
from mailsupport.store.db import Store
from mailsupport.store.models import OAuthToken

log = logging.getLogger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)
# How long one process may take to renew a token before another may try: longer than a
# token request can take.
LEASE = timedelta(seconds=90)
# `signed_in_at` is written at most this often (the daemon signs in every minute or so).
SIGNED_IN_EVERY = timedelta(minutes=1)
WAIT_STEP = 0.2  # seconds between looks at a row another process is renewing


def not_signed_in(login: str) -> str:
    return f'{login} is not signed in: run "mailsupport auth login"'


class TokenKeeper:
    """Access tokens for one account, from the row in the database (see module doc)."""

    def __init__(
        self,
        store: Store,
        account: OAuthAccount,
        timeout: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.account = account
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep
        self._memo: tuple[str, datetime] | None = None
        self._signed_in_at: datetime | None = None
        self._lock = threading.Lock()  # the daemon's threads share one keeper

    def access_token(self, refused: str | None = None) -> str:
        """A token to sign in with. `refused`: the token a server just turned down, which
        is renewed even when it looks fresh (revoked early, or the clocks disagree)."""
        with self._lock:
            now = self.clock()
            if self._memo and self._memo[0] != refused and self._fresh(self._memo[1], now):
                return self._memo[0]
            return self._from_row(refused)

    @property
    def expires_at(self) -> datetime | None:
        """When the token this process last used expires (for `doctor`)."""
        return self._memo[1] if self._memo else None

    def signed_in(self) -> None:
        """A mail server took our token: noted for `status`, at most once a minute."""
        now = self.clock()
        if self._signed_in_at and now - self._signed_in_at < SIGNED_IN_EVERY:
            return
        self._signed_in_at = now
        try:
            rows.used(self.store, self.account.key, now)
        except MailSupportError as error:  # a note for `status`: never worth failing a poll
            log.warning("could not note the sign-in of %s: %s", self.account.login, error)

    def _from_row(self, refused: str | None) -> str:
        account = self.account
        give_up = self.clock() + LEASE + timedelta(seconds=self.timeout)
        while True:
            now = self.clock()
            row = rows.load(self.store, account.key)
            if row is None:
                if account.flow == "device-code":
                    raise ConfigError(not_signed_in(account.login))
                row = rows.ensure(self.store, account, now)
            usable = row.access_token and row.access_token != refused
            if usable and row.access_expires_at and self._fresh(row.access_expires_at, now):
                return self._remember(row.access_token, row.access_expires_at)
            if account.flow == "device-code":
                if row.revoked_at is not None:
                    raise GrantRevoked(revoked_message(account.login))
                if not row.refresh_token:
                    raise ConfigError(not_signed_in(account.login))
            if rows.claim(self.store, account.key, row.version, now, now + LEASE):
                return self._renew(row, now)
            # Another process is renewing it: its old token serves until it expires.
            if usable and row.access_expires_at and row.access_expires_at > now:
                return self._remember(row.access_token, row.access_expires_at)
            if now > give_up:
                raise TemporaryError(
                    f"the OAuth2 token of {account.login} is being renewed by another "
                    "process that does not finish"
                )
            self.sleep(WAIT_STEP)

    def _renew(self, row: OAuthToken, now: datetime) -> str:
        account = self.account
        try:
            grant = self._ask(row)
        except GrantRevoked as error:
            rows.failed(self.store, account.key, str(error), now, revoked=True)
            raise
        except MailSupportError as error:
            rows.failed(self.store, account.key, str(error), now, revoked=False)
            raise
        # Committed before anything uses the token: a rotated refresh token survives a
        # crash from here on.
        rows.save_grant(self.store, account.key, grant, self.clock())
        log.info("renewed the OAuth2 token of %s", account.login)
        return self._remember(grant.access_token, grant.expires_at)

    def _ask(self, row: OAuthToken) -> Grant:
        account = self.account
        if account.flow == "client-credentials":
            return grants.client_credentials(account, self.timeout)
        if account.flow == "service-account":
            return grants.service_account(account, self.timeout)
        return grants.refresh(account, row.refresh_token, self.timeout)

    def _remember(self, token: str, expires_at: datetime) -> str:
        self._memo = (token, expires_at)
        return token

    @staticmethod
    def _fresh(expires_at: datetime, now: datetime) -> bool:
        return expires_at - REFRESH_MARGIN > now


_keepers: dict[tuple[str, str], TokenKeeper] = {}
_stores: dict[str, Store] = {}
_registry_lock = threading.Lock()


def keeper(settings: Settings, service: Service) -> TokenKeeper | None:
    """The keeper of `service`'s account (one per process and account); None when the
    service signs in with a password."""
    account = account_for(settings, service)
    if account is None:
        return None
    timeout = float(settings.imap_timeout if service == "imap" else settings.smtp_timeout)
    with _registry_lock:
        found = _keepers.get((settings.db_url, account.key))
        if found is None or found.account != account:
            store = _stores.get(settings.db_url)
            if store is None:
                store = _stores[settings.db_url] = Store.open(settings.db_url)
            found = _keepers[(settings.db_url, account.key)] = TokenKeeper(store, account, timeout)
        return found


def forget_keepers() -> None:
    """Drop what this process remembers (after `auth logout` or `auth login`), and close
    the keepers' database connections."""
    with _registry_lock:
        _keepers.clear()
        for store in _stores.values():
            store.engine.dispose()
        _stores.clear()
