"""The token endpoint's conversations: one function per way of getting an access token.

Authlib speaks the three standard grants (client credentials, device code RFC 8628, refresh
token) to Microsoft and to any OAuth2 server alike; google-auth signs the Google service
account's assertion (domain-wide delegation). Both are the optional extra `oauth`, imported
only here and only when a grant is asked for.

Every failure becomes one MailSupportError: a grant the server no longer honours is
GrantRevoked (errors.py: a person must sign in again), a refused client or scope is ConfigError, an
unreachable or failing server is TemporaryError.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from mailsupport.errors import ConfigError, GrantRevoked, MailSupportError, TemporaryError
from mailsupport.oauth.account import OAuthAccount

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# An access token that says nothing of its lifetime is taken to last this long.
DEFAULT_LIFETIME = timedelta(hours=1)
# RFC 6749 5.2 and RFC 8628 3.5 errors that pass with time.
_PASSING = {"temporarily_unavailable", "server_error", "slow_down"}
EXTRA_MISSING = (
    "OAuth2 sign-in needs mailsupport's oauth extra: run pip install '.[oauth]' in the "
    "mailsupport checkout, with the pip of the environment it is installed in"
)


def revoked_message(login: str) -> str:
    return f'sign-in for {login} was revoked: run "mailsupport auth login"'


@dataclass(frozen=True)
class Grant:
    """What the token endpoint gave: the access token, when it expires, and the refresh
    token when there is one (a new one when the server rotates them)."""

    access_token: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeviceCode:
    """RFC 8628 3.2: what the person is shown, and what we poll with."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_at: datetime
    interval: int


def client_credentials(account: OAuthAccount, timeout: float) -> Grant:
    with _session(account, timeout) as session, _translated(account):
        return _grant(session.fetch_token(account.token_url, grant_type="client_credentials"))


def refresh(account: OAuthAccount, refresh_token: str, timeout: float) -> Grant:
    with _session(account, timeout) as session, _translated(account):
        answer = session.refresh_token(account.token_url, refresh_token=refresh_token)
        return _grant(answer)


def service_account(account: OAuthAccount, timeout: float) -> Grant:
    """Google: a token for `account.login`, signed by the service account's key."""
    try:
        import google.auth.exceptions as google_errors
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account as google_sa
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    info = _key_file(account.key_file)
    if account.token_url:
        info["token_uri"] = account.token_url
    try:
        credentials = google_sa.Credentials.from_service_account_info(
            info, scopes=list(account.scopes), subject=account.login
        )
    except (ValueError, KeyError) as error:
        raise ConfigError(
            f"MAILSUPPORT_OAUTH_KEY_FILE is not a service account key: {error}"
        ) from None
    request = Request()
    try:
        credentials.refresh(_with_timeout(request, timeout))
    except google_errors.TransportError as error:
        raise TemporaryError(f"Google's token endpoint unreachable: {_line(error)}") from None
    except google_errors.RefreshError as error:
        if getattr(error, "retryable", False):
            raise TemporaryError(f"Google's token endpoint failed: {_line(error)}") from None
        raise ConfigError(
            f"Google refused a token for {account.login}: {_line(error.args[0])} (check the "
            "service account's domain-wide delegation and MAILSUPPORT_OAUTH_SCOPES)"
        ) from None
    expiry = credentials.expiry or (datetime.now(UTC) + DEFAULT_LIFETIME).replace(tzinfo=None)
    return Grant(access_token=credentials.token, expires_at=expiry.replace(tzinfo=UTC))


def start_device_flow(account: OAuthAccount, timeout: float) -> DeviceCode:
    """Ask for a device code and the code the person enters (RFC 8628 3.1)."""
    data = {"client_id": account.client_id}
    if account.scopes:
        data["scope"] = " ".join(account.scopes)
    with _session(account, timeout) as session, _translated(account):
        answer = session.post(account.device_url, data=data, withhold_token=True)
        if answer.status_code >= 500:
            answer.raise_for_status()
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "error" in body or "device_code" not in body:
            error = body.get("error", "") if isinstance(body, dict) else ""
            detail = body.get("error_description", "") if isinstance(body, dict) else ""
            raise ConfigError(
                f"the device authorization endpoint {_host(account.device_url)} refused us: "
                f"{_line(error or f'HTTP {answer.status_code}')} {_line(detail)}".rstrip()
            )
    now = datetime.now(UTC)
    uri = body.get("verification_uri") or body.get("verification_url") or ""
    return DeviceCode(
        device_code=str(body["device_code"]),
        user_code=str(body.get("user_code", "")),
        verification_uri=str(uri),
        verification_uri_complete=str(body.get("verification_uri_complete", "")),
        expires_at=now + timedelta(seconds=_seconds(body.get("expires_in"), 900)),
        interval=max(1, _seconds(body.get("interval"), 5)),
    )


def finish_device_flow(
    account: OAuthAccount,
    device: DeviceCode,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Grant:
    """Poll the token endpoint until the person approved (RFC 8628 3.4, 3.5)."""
    interval = device.interval
    while True:
        if datetime.now(UTC) >= device.expires_at:
            raise ConfigError(
                'the sign-in code expired before it was approved: run "mailsupport auth '
                'login" again'
            )
        sleep(interval)
        try:
            with _session(account, timeout) as session, _translated(account):
                answer = session.fetch_token(
                    account.token_url, grant_type=DEVICE_CODE_GRANT, device_code=device.device_code
                )
            return _grant(answer)
        except _Pending as pending:
            if pending.slow_down:
                interval += 5  # RFC 8628 3.5: every slow_down adds five seconds


class _Pending(Exception):
    def __init__(self, slow_down: bool) -> None:
        self.slow_down = slow_down


@contextmanager
def _session(account: OAuthAccount, timeout: float) -> Iterator[Any]:
    try:
        from authlib.integrations.requests_client import OAuth2Session
    except ImportError:
        raise ConfigError(EXTRA_MISSING) from None
    secret = account.client_secret or None
    # Microsoft documents the secret in the body; RFC 6749 2.3.1 makes Basic the one every
    # server must take. A public client (device code, no secret) names itself in the body.
    method = "none"
    if secret:
        method = "client_secret_post" if account.provider == "microsoft" else "client_secret_basic"
    session = OAuth2Session(
        client_id=account.client_id,
        client_secret=secret,
        scope=" ".join(account.scopes) or None,
        token_endpoint_auth_method=method,
        default_timeout=timeout,
    )
    try:
        yield session
    finally:
        session.close()


@contextmanager
def _translated(account: OAuthAccount) -> Iterator[None]:
    import requests
    from authlib.integrations.base_client.errors import OAuthError

    where = _host(account.token_url)
    try:
        yield
    except MailSupportError:
        raise
    except OAuthError as error:
        code, detail = error.error or "", _line(error.description or "")
        if code in ("authorization_pending", "slow_down") and account.flow == "device-code":
            raise _Pending(code == "slow_down") from None
        if code == "invalid_grant" and account.flow == "device-code":
            raise GrantRevoked(revoked_message(account.login)) from None
        if code in _PASSING:
            failure = f"OAuth2 server {where} failed: {code} {detail}".rstrip()
            raise TemporaryError(failure) from None
        if code == "invalid_client":
            raise ConfigError(
                f"OAuth2 server {where} refused the client: {detail or code} (check "
                "MAILSUPPORT_OAUTH_CLIENT_ID and MAILSUPPORT_OAUTH_CLIENT_SECRET)"
            ) from None
        if code == "access_denied":
            declined = f"sign-in for {account.login} was declined: {detail or code}"
            raise ConfigError(declined) from None
        if code == "expired_token":
            raise ConfigError(
                'the sign-in code expired before it was approved: run "mailsupport auth '
                'login" again'
            ) from None
        raise ConfigError(
            f"OAuth2 server {where} refused sign-in for {account.login}: {code} {detail}".rstrip()
        ) from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        raise TemporaryError(f"OAuth2 server {where} answered HTTP {status}") from None
    except (requests.RequestException, OSError) as error:
        raise TemporaryError(f"OAuth2 server {where} unreachable: {_line(error)}") from None
    except ValueError as error:  # Authlib: a 4xx answer that is not a JSON object
        raise TemporaryError(f"OAuth2 server {where} answered nonsense: {_line(error)}") from None


def _grant(answer: Any) -> Grant:
    access = answer.get("access_token")
    if not access:
        raise TemporaryError("the OAuth2 server answered without an access token")
    lifetime = _seconds(answer.get("expires_in"), int(DEFAULT_LIFETIME.total_seconds()))
    return Grant(
        access_token=str(access),
        expires_at=datetime.now(UTC) + timedelta(seconds=lifetime),
        refresh_token=answer.get("refresh_token") or None,
    )


def _key_file(path: str) -> dict[str, Any]:
    import json

    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except OSError as error:
        raise ConfigError(f"MAILSUPPORT_OAUTH_KEY_FILE {path}: {error.strerror or error}") from None
    except ValueError:
        raise ConfigError(f"MAILSUPPORT_OAUTH_KEY_FILE {path} is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(f"MAILSUPPORT_OAUTH_KEY_FILE {path} is not a service account key")
    return info


def _with_timeout(request: Any, timeout: float) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def _seconds(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


def _line(value: object) -> str:
    """One printable line of what a server said (it may say anything)."""
    text = " ".join(str(value).split())
    text = "".join(c for c in text if c.isprintable())
    return text[:300]
