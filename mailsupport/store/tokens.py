"""OAuth2 token rows (models.OAuthToken): read, claimed for a refresh, written at once.

Each write is its own short transaction, never held across a call to the token server:
a token that came back is committed before it is used, so a crash right after cannot lose
a rotated refresh token.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from mailsupport.oauth.account import OAuthAccount
from mailsupport.oauth.grants import Grant
from mailsupport.store.db import Store
from mailsupport.store.models import OAuthToken


def load(store: Store, key: str) -> OAuthToken | None:
    with store.read() as session:
        return session.get(OAuthToken, key)


def every(store: Store) -> list[OAuthToken]:
    with store.read() as session:
        return list(session.exec(select(OAuthToken).order_by(col(OAuthToken.account))))


def ensure(store: Store, account: OAuthAccount, now: datetime) -> OAuthToken:
    """The account's row, made empty when it has none (flows that need no person)."""
    with store.write() as session:
        row = session.get(OAuthToken, account.key)
        if row is None:
            row = OAuthToken(
                account=account.key,
                login=account.login,
                provider=account.provider,
                flow=account.flow,
                created_at=now,
            )
            session.add(row)
            session.flush()
        return row


def claim(store: Store, key: str, version: int, now: datetime, until: datetime) -> bool:
    """Take the refresh lease when the row is still `version` and nobody holds the lease."""
    table = OAuthToken.__table__  # type: ignore[attr-defined]
    with store.write() as session:
        done = session.execute(
            sa.update(table)
            .where(
                table.c.account == key,
                table.c.version == version,
                sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now),
            )
            .values(lease_until=until, version=table.c.version + 1)
        )
        return done.rowcount == 1


def save_grant(store: Store, key: str, grant: Grant, now: datetime) -> None:
    """What the server gave, committed now; a refresh token it did not renew stays."""
    table = OAuthToken.__table__  # type: ignore[attr-defined]
    values: dict[str, object] = {
        "access_token": grant.access_token,
        "access_expires_at": grant.expires_at,
        "refreshed_at": now,
        "lease_until": None,
        "revoked_at": None,
        "last_error": "",
        "last_error_at": None,
        "version": table.c.version + 1,
    }
    if grant.refresh_token:
        values["refresh_token"] = grant.refresh_token
    with store.write() as session:
        session.execute(sa.update(table).where(table.c.account == key).values(**values))


def signed_in(store: Store, account: OAuthAccount, grant: Grant, now: datetime) -> None:
    """A person's new grant (`auth login`): the row starts again from it."""
    with store.write() as session:
        row = session.get(OAuthToken, account.key)
        if row is None:
            row = OAuthToken(account=account.key, created_at=now)
        row.login, row.provider, row.flow = account.login, account.provider, account.flow
        row.access_token = grant.access_token
        row.access_expires_at = grant.expires_at
        row.refresh_token = grant.refresh_token or ""
        row.refreshed_at = now
        row.lease_until = row.revoked_at = row.last_error_at = None
        row.last_error = ""
        row.version += 1
        session.add(row)


def failed(store: Store, key: str, error: str, now: datetime, *, revoked: bool) -> None:
    """The refresh failed: the lease goes, the error stays for `auth status`."""
    table = OAuthToken.__table__  # type: ignore[attr-defined]
    values: dict[str, object] = {
        "lease_until": None,
        "last_error": error,
        "last_error_at": now,
        "version": table.c.version + 1,
    }
    if revoked:
        values.update(revoked_at=now, access_token="", access_expires_at=None)
    with store.write() as session:
        session.execute(sa.update(table).where(table.c.account == key).values(**values))


def used(store: Store, key: str, now: datetime) -> None:
    """A mail server took the account's token (for `status` and `auth status`)."""
    table = OAuthToken.__table__  # type: ignore[attr-defined]
    with store.write() as session:
        session.execute(sa.update(table).where(table.c.account == key).values(signed_in_at=now))


def forget(store: Store, keys: list[str] | None = None) -> int:
    """Delete these accounts' rows (all when None); how many there were."""
    table = OAuthToken.__table__  # type: ignore[attr-defined]
    statement = sa.delete(table)
    if keys is not None:
        statement = statement.where(table.c.account.in_(keys))
    with store.write() as session:
        return session.execute(statement).rowcount or 0
