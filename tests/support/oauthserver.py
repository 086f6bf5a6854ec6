"""A real OAuth2 authorisation server on loopback for the tests: http.server in a thread.

    from tests.support.oauthserver import OAuthServer  # the fixture is registered by conftest.py

    def test_refresh(oauth_server: OAuthServer) -> None:
        refresh = oauth_server.grant("agent@example.com")  # as if the agent consented earlier
        ...  # the code under test POSTs grant_type=refresh_token to oauth_server.token_url
        assert oauth_server.count(REFRESH_GRANT) == 1
        assert oauth_server.issued_refresh_tokens[-1] != refresh  # rotated

Outside the fixture it is a context manager: `with OAuthServer() as server:`; `start()` and
`stop()` also work on their own (the port stays the same, so a stop is a refused connection).

Plain HTTP on 127.0.0.1, form-encoded POST bodies, JSON answers. Errors as RFC 6749 5.2:
`{"error": ..., "error_description": ...}` with status 400, or 401 for invalid_client.

Endpoints (`url` is http://127.0.0.1:PORT):
- `token_url` (/token), grant types:
  - `client_credentials`: needs the client secret; a token for `app_user`, no refresh token.
  - `refresh_token`: a new access token and, while `rotate_refresh` (the default), a new
    refresh token; the old one is refused (invalid_grant) from then on.
  - DEVICE_GRANT (RFC 8628): authorization_pending until `approve()`, slow_down when polled
    sooner than the interval (which then grows by `slow_down_step`), access_denied after
    `deny()`, expired_token after `device_lifetime`; on approval tokens for the approver.
  - JWT_GRANT (RFC 7523, Google service accounts): an RS256 JWT from a key registered with
    `register_service_account()` (or made by `service_account_key_file()`); `sub` must be
    in `delegated`, `aud` our token_url or Google's (as google-auth sends). A token for
    `sub` (without `sub`: for the service account itself), no refresh token.
- `device_url` (/device): starts a device flow; `verification_uri` (/verify) is a plain page.
- `introspection_url` (/introspect, RFC 7662): `{"active": true, "username": ..., ...}` or
  `{"active": false}`; any client authentication, or none, is accepted (Dovecot uses it).

Clients authenticate with client_id (+ client_secret) in the body or with HTTP Basic. The
client is public by default: client_id alone is enough except for client_credentials (a
secret that is sent must be right); `require_secret = True` makes it confidential.

Test controls: `grant(user)`, `revoke(user)`, `expire_access_tokens()`, `fail_next(n,
status)`, `approve()`/`deny()`, `valid(token)`, and records: `requests`, `count()`,
`errors`, `issued_refresh_tokens`, `issued_access_tokens`.

Hooks run in the server's request thread, without the server's lock held (they may call any
method here); an exception in one is kept in `internal_errors` and the fixture fails on it:
- `on_introspect()`: after an introspection request was read, before the token is looked up
  and the answer is sent. Dovecot is then waiting for us and the IMAP client for Dovecot.
- `on_token(grant_type)`: after a token response (status 200 only) was completely written
  and flushed to the client's socket, before the server reads the connection's next request.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "CLIENT_CREDENTIALS_GRANT",
    "DEVICE_GRANT",
    "GOOGLE_TOKEN_AUDIENCE",
    "JWT_GRANT",
    "REFRESH_GRANT",
    "REVOKED_DESCRIPTION",
    "OAuthServer",
    "oauth_server",
    "sign_jwt",
]

HOST = "127.0.0.1"
CLIENT_CREDENTIALS_GRANT = "client_credentials"
REFRESH_GRANT = "refresh_token"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs every assertion for Google's token endpoint, whatever token_uri it posts
# to; Google takes that audience, and so do we (besides our own token_url).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
REVOKED_DESCRIPTION = "AADSTS50173-like: the grant was revoked"
# RFC 8628 6.1: no vowels (no words) and no look-alike letters.
_USER_CODE_LETTERS = "BCDFGHJKLMNPQRSTVWXZ"
# A poll that arrives this much early still counts as on time: clients that time the
# interval from when they sent the last poll, not from its answer, are not at fault.
_POLL_SLACK = 0.1
_JWT_MAX_LIFETIME = 3600 + 300  # Google takes assertions valid for up to an hour (+ skew)


class OAuthError(Exception):
    """An RFC 6749 5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class AccessToken:
    value: str
    user: str
    scope: str
    client_id: str
    expires_at: float  # time.time(); introspection's `exp`
    revoked: bool = False


@dataclass
class RefreshGrant:
    user: str
    scope: str
    client_id: str


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float  # time.monotonic()
    interval: float
    state: str = "pending"  # pending, approved, denied, used
    user: str | None = None
    last_poll: float | None = None  # time.monotonic()


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    issued_grant: str | None = None  # set on a 200 token answer: on_token runs after it


class OAuthServer:
    """An authorisation server for one registered client; see the module docstring."""

    def __init__(
        self, client_id: str = "desk-app", client_secret: str = "desk-secret", port: int = 0
    ) -> None:
        self.host = HOST
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.require_secret = False
        self.access_lifetime = 3600  # seconds: expires_in of issued access tokens
        self.rotate_refresh = True
        self.app_user = "support@example.com"  # whom client_credentials tokens are for
        self.delegated: set[str] = set()  # users a service account may act as (`sub`)
        self.device_lifetime = 600  # seconds: expires_in of device codes
        self.device_interval = 1  # seconds between polls, announced as `interval`
        self.slow_down_step = 5  # RFC 8628 3.5: each slow_down adds 5 s to the interval
        self.on_introspect: Callable[[], None] | None = None
        self.on_token: Callable[[str], None] | None = None
        # Records, in order.
        self.requests: list[tuple[str, str]] = []  # (path, grant_type or "")
        self.errors: list[tuple[str, str]] = []  # (grant_type or path, error code)
        self.issued_refresh_tokens: list[str] = []
        self.issued_access_tokens: list[str] = []
        self.internal_errors: list[BaseException] = []  # hook exceptions and server bugs
        self.lock = threading.RLock()
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self._dead_refresh: dict[str, str] = {}  # refresh token -> why it stopped working
        self._devices: dict[str, DeviceCode] = {}  # by device_code, in order of issue
        self._service_accounts: dict[str, rsa.RSAPublicKey] = {}  # by client_email
        self._fail_left = 0
        self._fail_status = 503
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- addresses --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def device_url(self) -> str:
        return self.url + "/device"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    @property
    def verification_uri(self) -> str:
        return self.url + "/verify"

    # -- running ----------------------------------------------------------------------------

    def start(self) -> Self:
        assert self._httpd is None, "already running"
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.owner = self
        self.port = int(httpd.server_address[1])  # a restart comes back on the same port
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections: clients see a refused or reset connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test controls ----------------------------------------------------------------------

    def grant(self, user: str, scope: str = "") -> str:
        """A refresh token for `user`, as if they had consented earlier."""
        with self.lock:
            return self._new_refresh(RefreshGrant(user, scope, self.client_id))

    def revoke(self, user: str) -> None:
        """Every refresh and access token of `user` stops working now."""
        with self.lock:
            for token, grant in list(self._refresh.items()):
                if grant.user == user:
                    del self._refresh[token]
                    self._dead_refresh[token] = "revoked"
            for access in self._access.values():
                if access.user == user:
                    access.revoked = True

    def expire_access_tokens(self) -> None:
        """Every access token issued so far is inactive from now on (refresh tokens live)."""
        now = time.time()
        with self.lock:
            for access in self._access.values():
                access.expires_at = min(access.expires_at, now)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next n requests to /token get `status` with a short text/plain body (as from a
        proxy in front of a dead server) and change nothing. Other endpoints still answer."""
        with self.lock:
            self._fail_left, self._fail_status = n, status

    def approve(self, user_code: str | None = None, user: str = "agent@example.com") -> str:
        """`user` approves the latest pending device code, or the named one; returns its code."""
        return self._decide(user_code, "approved", user)

    def deny(self, user_code: str | None = None, user: str = "agent@example.com") -> str:
        return self._decide(user_code, "denied", user)

    @property
    def pending_codes(self) -> list[str]:
        """User codes of device flows still waiting for approval, oldest first."""
        now = time.monotonic()
        with self.lock:
            return [
                d.user_code
                for d in self._devices.values()
                if d.state == "pending" and now < d.expires_at
            ]

    def register_service_account(self, client_email: str, public_key_pem: str | bytes) -> None:
        key = serialization.load_pem_public_key(
            public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        )
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError("a service account key must be RSA (RS256)")
        with self.lock:
            self._service_accounts[client_email] = key

    def service_account_key_file(
        self,
        directory: Path,
        token_uri: str | None = None,
        client_email: str = "desk-sa@mailsupport-test.iam.gserviceaccount.com",
    ) -> Path:
        """A new RSA key, registered here, in a Google-style JSON key file in `directory`.

        `token_uri` (default: ours) is written into the file; google-auth posts there.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.register_service_account(
            client_email,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        key_id = secrets.token_hex(20)
        info = {
            "type": "service_account",
            "project_id": "mailsupport-test",
            "private_key_id": key_id,
            "private_key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            "client_email": client_email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": self.url + "/authorize",
            "token_uri": token_uri or self.token_url,
        }
        path = Path(directory) / f"service-account-{key_id[:8]}.json"
        path.write_text(json.dumps(info, indent=2))
        path.chmod(0o600)
        return path

    # -- queries ----------------------------------------------------------------------------

    def valid(self, token: str) -> str | None:
        """The user this access token is valid for now, or None."""
        with self.lock:
            access = self._access.get(token)
            if access is None or access.revoked or time.time() >= access.expires_at:
                return None
            return access.user

    def count(self, grant_type: str) -> int:
        """How many /token requests came with this grant_type, whatever their outcome."""
        with self.lock:
            return sum(
                1 for path, grant in self.requests if path == "/token" and grant == grant_type
            )

    # -- requests (called from the request threads) ----------------------------------------------

    def _answer(self, handler: _Handler, path: str, form: dict[str, str]) -> _Reply:
        grant_type = form.get("grant_type", "") if path == "/token" else ""
        with self.lock:
            self.requests.append((path, grant_type))
            if path == "/token" and self._fail_left > 0:
                self._fail_left -= 1
                status = self._fail_status
                return _Reply(status, f"HTTP {status} (simulated outage)\n".encode(), "text/plain")
        try:
            if path == "/token":
                return self._token(handler, grant_type, form)
            if path == "/device":
                return self._device(handler, form)
            if path == "/introspect":
                self._run_hook(self.on_introspect)
                return _json(200, self._introspect(form.get("token", "")))
        except OAuthError as exc:
            with self.lock:
                self.errors.append((grant_type or path, exc.error))
            headers: tuple[tuple[str, str], ...] = ()
            if exc.status == 401 and handler.headers.get("Authorization"):
                headers = (("WWW-Authenticate", 'Basic realm="oauth"'),)
            reply = _json(exc.status, {"error": exc.error, "error_description": exc.description})
            reply.headers = (*reply.headers, *headers)
            return reply
        return _json(404, {"error": "not_found", "error_description": f"no endpoint {path}"})

    def _token(self, handler: _Handler, grant_type: str, form: dict[str, str]) -> _Reply:
        if grant_type == JWT_GRANT:  # Google's service accounts send no client credentials
            payload = self._jwt_bearer(form)
        else:
            client_id = self._client(
                handler, form, secret_needed=grant_type == "client_credentials"
            )
            if grant_type == CLIENT_CREDENTIALS_GRANT:
                payload = self._issue(self.app_user, form.get("scope", ""), client_id, False)
            elif grant_type == REFRESH_GRANT:
                payload = self._refresh_grant(form, client_id)
            elif grant_type == DEVICE_GRANT:
                payload = self._device_grant(form, client_id)
            elif not grant_type:
                raise OAuthError("invalid_request", "grant_type is missing")
            else:
                raise OAuthError("unsupported_grant_type", f"{grant_type!r} is not supported")
        reply = _json(200, payload)
        reply.issued_grant = grant_type
        return reply

    def _client(self, handler: _Handler, form: dict[str, str], secret_needed: bool) -> str:
        """The authenticated client_id, from HTTP Basic or the body (never both)."""
        header = handler.headers.get("Authorization", "")
        if header.lower().startswith("basic "):
            if "client_secret" in form:
                raise OAuthError("invalid_request", "client authenticated twice (Basic and body)")
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            raw_id, _, raw_secret = decoded.partition(":")
            # RFC 6749 2.3.1: both parts are form-encoded before they are joined.
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if form.get("client_id", client_id) != client_id:
                raise OAuthError("invalid_request", "client_id in body differs from Basic")
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if not client_id:
            raise OAuthError("invalid_client", "no client_id", 401)
        if client_id != self.client_id:
            raise OAuthError("invalid_client", f"unknown client {client_id!r}", 401)
        if secret is None and (secret_needed or self.require_secret):
            raise OAuthError("invalid_client", "client authentication required", 401)
        if secret is not None and not secrets.compare_digest(secret, self.client_secret):
            raise OAuthError("invalid_client", "wrong client secret", 401)
        return client_id

    def _refresh_grant(self, form: dict[str, str], client_id: str) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is missing")
        with self.lock:
            grant = self._refresh.get(token)
            if grant is None:
                why = self._dead_refresh.get(token)
                if why == "revoked":
                    raise OAuthError("invalid_grant", REVOKED_DESCRIPTION)
                if why == "rotated":
                    raise OAuthError("invalid_grant", "refresh token already used (rotated)")
                raise OAuthError("invalid_grant", "unknown refresh token")
            if grant.client_id != client_id:
                raise OAuthError("invalid_grant", "refresh token belongs to another client")
            scope = form.get("scope") or grant.scope
            payload = self._issue(grant.user, scope, client_id, refresh=False)
            if self.rotate_refresh:
                del self._refresh[token]
                self._dead_refresh[token] = "rotated"
                payload["refresh_token"] = self._new_refresh(grant)
            return payload

    def _device(self, handler: _Handler, form: dict[str, str]) -> _Reply:
        client_id = self._client(handler, form, secret_needed=False)
        device_code = secrets.token_urlsafe(32)
        letters = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        with self.lock:
            self._devices[device_code] = DeviceCode(
                device_code=device_code,
                user_code=user_code,
                client_id=client_id,
                scope=form.get("scope", ""),
                expires_at=time.monotonic() + self.device_lifetime,
                interval=self.device_interval,
            )
            return _json(
                200,
                {
                    "device_code": device_code,
                    "user_code": user_code,
                    "verification_uri": self.verification_uri,
                    "verification_uri_complete": (
                        f"{self.verification_uri}?{urlencode({'user_code': user_code})}"
                    ),
                    "expires_in": self.device_lifetime,
                    "interval": self.device_interval,
                },
            )

    def _device_grant(self, form: dict[str, str], client_id: str) -> dict[str, Any]:
        with self.lock:
            device = self._devices.get(form.get("device_code", ""))
            if device is None or device.client_id != client_id:
                raise OAuthError("invalid_grant", "unknown device_code")
            now = time.monotonic()
            if now >= device.expires_at:
                raise OAuthError("expired_token", "the device code expired")
            if device.state == "used":
                raise OAuthError("invalid_grant", "the device code was already redeemed")
            too_soon = (
                device.last_poll is not None
                and now - device.last_poll < device.interval - _POLL_SLACK
            )
            device.last_poll = now
            if too_soon:
                device.interval += self.slow_down_step
                raise OAuthError("slow_down", f"poll at most every {device.interval} s")
            if device.state == "denied":
                raise OAuthError("access_denied", "the user declined")
            if device.state == "pending":
                raise OAuthError("authorization_pending", "the user has not approved yet")
            assert device.user is not None
            device.state = "used"
            return self._issue(device.user, device.scope, client_id, refresh=True)

    def _jwt_bearer(self, form: dict[str, str]) -> dict[str, Any]:
        assertion = form.get("assertion", "")
        if not assertion:
            raise OAuthError("invalid_request", "assertion is missing")
        try:
            head_b64, claims_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(claims_b64))
            signature = _b64url_decode(signature_b64)
        except ValueError:  # also binascii.Error and json's JSONDecodeError
            raise OAuthError("invalid_grant", "malformed JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_grant", "malformed JWT")
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", f"JWT algorithm {header.get('alg')!r}, not RS256")
        issuer = claims.get("iss")
        with self.lock:
            key = self._service_accounts.get(issuer) if isinstance(issuer, str) else None
        if key is None:
            raise OAuthError("invalid_grant", f"unknown service account {issuer!r}")
        try:
            key.verify(
                signature,
                f"{head_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise OAuthError("invalid_grant", "invalid JWT signature") from None
        if claims.get("aud") not in (self.token_url, GOOGLE_TOKEN_AUDIENCE):
            raise OAuthError("invalid_grant", f"JWT audience {claims.get('aud')!r} is not ours")
        now = time.time()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= now:
            raise OAuthError("invalid_grant", "JWT expired or without exp")
        if exp > now + _JWT_MAX_LIFETIME:
            raise OAuthError("invalid_grant", "JWT valid for more than an hour")
        scope = claims.get("scope")
        if not scope or not isinstance(scope, str):
            raise OAuthError("invalid_scope", "empty or missing scope")
        subject = claims.get("sub") or issuer
        assert isinstance(issuer, str)
        if not isinstance(subject, str) or (subject != issuer and subject not in self.delegated):
            raise OAuthError(
                "unauthorized_client", f"{issuer} may not act as {subject} (no delegation)"
            )
        return self._issue(subject, scope, issuer, refresh=False)

    def _introspect(self, token: str) -> dict[str, Any]:
        with self.lock:
            user = self.valid(token)
            if user is None:
                return {"active": False}
            access = self._access[token]
            return {
                "active": True,
                "username": user,
                "email": user,
                "sub": user,
                "scope": access.scope,
                "exp": int(access.expires_at),
                "client_id": access.client_id,
                "token_type": "Bearer",
            }

    # -- helpers ----------------------------------------------------------------------------

    def _issue(self, user: str, scope: str, client_id: str, refresh: bool) -> dict[str, Any]:
        with self.lock:
            value = secrets.token_urlsafe(32)
            self._access[value] = AccessToken(
                value, user, scope, client_id, time.time() + self.access_lifetime
            )
            self.issued_access_tokens.append(value)
            payload: dict[str, Any] = {
                "access_token": value,
                "token_type": "Bearer",
                "expires_in": self.access_lifetime,
            }
            if scope:
                payload["scope"] = scope
            if refresh:
                payload["refresh_token"] = self._new_refresh(RefreshGrant(user, scope, client_id))
            return payload

    def _new_refresh(self, grant: RefreshGrant) -> str:
        with self.lock:
            token = secrets.token_urlsafe(32)
            self._refresh[token] = RefreshGrant(grant.user, grant.scope, grant.client_id)
            self.issued_refresh_tokens.append(token)
            return token

    def _decide(self, user_code: str | None, state: str, user: str) -> str:
        with self.lock:
            waiting = self.pending_codes
            if user_code is None:
                if not waiting:
                    raise LookupError("no device code is waiting for approval")
                user_code = waiting[-1]
            wanted = _normal_user_code(user_code)
            for device in self._devices.values():
                if _normal_user_code(device.user_code) == wanted and device.user_code in waiting:
                    device.state, device.user = state, user
                    return device.user_code
            raise LookupError(f"no pending device code {user_code!r}")

    def _run_hook(self, hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as exc:  # the answer still goes out; the fixture reports it
            with self.lock:
                self.internal_errors.append(exc)

    def __repr__(self) -> str:
        return f"<OAuthServer {self.url}>"


def sign_jwt(private_key_pem: str | bytes, claims: dict[str, Any], key_id: str = "") -> str:
    """An RS256 JWT of `claims`, as a service account signs its assertion."""
    pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("RS256 needs an RSA key")
    header = {"alg": "RS256", "typ": "JWT", **({"kid": key_id} if key_id else {})}
    signing_input = f"{_b64url_json(header)}.{_b64url_json(claims)}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_json(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _normal_user_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper()


def _json(status: int, payload: dict[str, Any]) -> _Reply:
    # RFC 6749 5.1: token answers must not be cached.
    headers = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
    return _Reply(status, json.dumps(payload).encode(), "application/json", headers)


class _HTTPServer(ThreadingHTTPServer):
    owner: OAuthServer
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def close_connections(self) -> None:
        with self.connections_lock:
            for sock in self.connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # Keep-alive as real servers do: Dovecot's HTTP client reuses its connection.
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: `requests` and `errors` record what happened

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        with owner.lock:
            owner.requests.append((path, ""))
        if path == "/verify":
            code = parse_qs(urlsplit(self.path).query).get("user_code", [""])[0]
            page = (
                "<!doctype html><title>Sign in</title><h1>Enter the code shown by the app</h1>"
                f"<p>{html.escape(code)}</p>"
            )
            self._send(_Reply(200, page.encode(), "text/html; charset=utf-8"))
        elif path in ("/token", "/device", "/introspect"):
            self._send(_json(405, {"error": "invalid_request", "error_description": "use POST"}))
        else:
            self._send(_json(404, {"error": "not_found", "error_description": path}))

    def do_POST(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(_Reply(411, b"Content-Length required\n", "text/plain"))
            return
        body = self.rfile.read(length)
        try:
            reply = self._form_reply(owner, path, body)
        except Exception as exc:  # a bug here: answer 500 and let the fixture fail the test
            with owner.lock:
                owner.internal_errors.append(exc)
            reply = _json(500, {"error": "server_error", "error_description": repr(exc)})
        self._send(reply)
        if reply.issued_grant is not None:
            owner._run_hook(owner.on_token, reply.issued_grant)

    def _form_reply(self, owner: OAuthServer, path: str, body: bytes) -> _Reply:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        # Dovecot's introspection is let through whatever it declares; the endpoints a
        # product's client calls insist on a form, as real servers do.
        if path != "/introspect" and content_type != "application/x-www-form-urlencoded":
            error = {"error": "invalid_request", "error_description": "send a form-encoded body"}
            with owner.lock:
                owner.requests.append((path, ""))
                owner.errors.append((path, "invalid_request"))
            return _json(400, error)
        try:
            fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            fields = {}
        repeated = sorted(name for name, values in fields.items() if len(values) > 1)
        form = {name: values[0] for name, values in fields.items()}
        if repeated:  # RFC 6749 3.2: parameters must not repeat
            with owner.lock:
                owner.requests.append((path, form.get("grant_type", "")))
                owner.errors.append((path, "invalid_request"))
            description = f"repeated parameters: {', '.join(repeated)}"
            return _json(400, {"error": "invalid_request", "error_description": description})
        return owner._answer(self, path, form)

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        self.wfile.flush()


@pytest.fixture
def oauth_server() -> Iterator[OAuthServer]:
    """A running OAuthServer; the test fails if a hook raised or the server hit a bug."""
    with OAuthServer() as server:
        yield server
    assert not server.internal_errors, f"oauth_server: {server.internal_errors!r}"
