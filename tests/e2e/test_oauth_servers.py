"""The OAuth2 test servers behave as documented, checked with plain clients: urllib against
the authorisation server (tests/support/oauthserver.py), imapclient against Dovecot's oauth2
passdb, aiosmtplib and smtplib against the SMTP server's XOAUTH2 and OAUTHBEARER, and
google-auth's service-account credentials. They check the test infrastructure itself,
which the product's OAuth2 tests (test_oauth.py) rely on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import smtplib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import imapclient
import pytest
from imapclient.exceptions import LoginError

from tests.support.imapservers import DovecotServer
from tests.support.oauthserver import (
    CLIENT_CREDENTIALS_GRANT,
    DEVICE_GRANT,
    GOOGLE_TOKEN_AUDIENCE,
    JWT_GRANT,
    REFRESH_GRANT,
    REVOKED_DESCRIPTION,
    OAuthServer,
    sign_jwt,
)
from tests.support.smtpserver import AuthAttempt, SmtpServer

AGENT = "agent@example.com"
MESSAGE = b"From: support@example.com\r\nTo: x@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


# -- a plain HTTP client ----------------------------------------------------------------------


def post(
    url: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """POST a form; (status, parsed JSON or raw text, headers) for success and error alike."""
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, body, headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, got = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    if got.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(raw), got
    return status, raw.decode(), got


def token(server: OAuthServer, grant_type: str, **fields: str) -> tuple[int, Any]:
    """A /token request authenticated as the public client (client_id in the body)."""
    status, payload, _ = post(
        server.token_url, {"grant_type": grant_type, "client_id": server.client_id, **fields}
    )
    return status, payload


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def introspect(server: OAuthServer, access_token: str) -> dict[str, Any]:
    status, payload, _ = post(server.introspection_url, {"token": access_token})
    assert status == 200
    return payload  # type: ignore[no-any-return]


# -- client_credentials -----------------------------------------------------------------------


def test_client_credentials_with_the_secret_in_the_body(oauth_server: OAuthServer) -> None:
    status, payload = token(
        oauth_server, CLIENT_CREDENTIALS_GRANT, client_secret="desk-secret", scope="mail.send"
    )
    assert status == 200
    assert payload["token_type"] == "Bearer"
    assert payload["expires_in"] == 3600
    assert payload["scope"] == "mail.send"
    assert "refresh_token" not in payload
    assert oauth_server.valid(payload["access_token"]) == "support@example.com"
    answer = introspect(oauth_server, payload["access_token"])
    assert answer["active"] is True
    assert answer["username"] == answer["email"] == "support@example.com"
    assert answer["client_id"] == "desk-app"
    assert answer["scope"] == "mail.send"
    assert answer["exp"] > time.time() + 3500


def test_client_credentials_with_http_basic(oauth_server: OAuthServer) -> None:
    oauth_server.app_user = "desk@example.com"
    oauth_server.access_lifetime = 60
    status, payload, _ = post(
        oauth_server.token_url,
        {"grant_type": CLIENT_CREDENTIALS_GRANT},
        basic("desk-app", "desk-secret"),
    )
    assert status == 200
    assert payload["expires_in"] == 60
    assert oauth_server.valid(payload["access_token"]) == "desk@example.com"


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        ({"client_id": "desk-app"}, {}),  # no secret: client_credentials needs one
        ({"client_id": "desk-app", "client_secret": "wrong"}, {}),
        ({"client_id": "someone-else", "client_secret": "desk-secret"}, {}),
        ({}, basic("desk-app", "wrong")),
        ({}, {}),
    ],
    ids=["no-secret", "wrong-secret", "unknown-client", "wrong-basic", "anonymous"],
)
def test_client_authentication_failures_are_invalid_client_401(
    oauth_server: OAuthServer, form: dict[str, str], headers: dict[str, str]
) -> None:
    status, payload, got = post(
        oauth_server.token_url, {"grant_type": CLIENT_CREDENTIALS_GRANT, **form}, headers
    )
    assert status == 401
    assert payload["error"] == "invalid_client"
    assert payload["error_description"]
    if headers:  # RFC 6749 5.2: a client that tried Basic is told the scheme
        assert got["WWW-Authenticate"].startswith("Basic")
    assert oauth_server.issued_access_tokens == []


def test_malformed_requests(oauth_server: OAuthServer) -> None:
    assert token(oauth_server, "password", username="u", password="p") == (
        400,
        {"error": "unsupported_grant_type", "error_description": "'password' is not supported"},
    )
    status, payload, _ = post(oauth_server.token_url, {"client_id": "desk-app"})
    assert (status, payload["error"]) == (400, "invalid_request")
    # JSON instead of a form, and a parameter given twice (RFC 6749 3.2).
    request = urllib.request.Request(
        oauth_server.token_url,
        json.dumps({"grant_type": CLIENT_CREDENTIALS_GRANT}).encode(),
        {"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"] == "invalid_request"
    body = "grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=desk-app"
    request = urllib.request.Request(oauth_server.token_url, body.encode())
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert oauth_server.issued_access_tokens == []


# -- refresh_token ----------------------------------------------------------------------------


def test_refresh_rotates_and_the_old_token_stops_working(oauth_server: OAuthServer) -> None:
    first = oauth_server.grant(AGENT, scope="imap smtp")
    status, payload = token(oauth_server, REFRESH_GRANT, refresh_token=first)
    assert status == 200
    second = payload["refresh_token"]
    assert second != first
    assert payload["scope"] == "imap smtp"
    assert oauth_server.valid(payload["access_token"]) == AGENT
    assert oauth_server.issued_refresh_tokens == [first, second]

    status, payload = token(oauth_server, REFRESH_GRANT, refresh_token=first)
    assert status == 400
    assert payload["error"] == "invalid_grant"

    status, payload = token(oauth_server, REFRESH_GRANT, refresh_token=second)
    assert status == 200
    assert oauth_server.issued_refresh_tokens == [first, second, payload["refresh_token"]]
    assert oauth_server.count(REFRESH_GRANT) == 3
    assert oauth_server.errors == [(REFRESH_GRANT, "invalid_grant")]
    assert oauth_server.requests == [("/token", REFRESH_GRANT)] * 3


def test_refresh_without_rotation_keeps_the_token(oauth_server: OAuthServer) -> None:
    oauth_server.rotate_refresh = False
    refresh = oauth_server.grant(AGENT)
    for _ in range(2):
        status, payload = token(oauth_server, REFRESH_GRANT, refresh_token=refresh)
        assert status == 200
        assert "refresh_token" not in payload
    assert oauth_server.issued_refresh_tokens == [refresh]


def test_refresh_with_basic_and_with_a_wrong_secret(oauth_server: OAuthServer) -> None:
    refresh = oauth_server.grant(AGENT)
    form = {"grant_type": REFRESH_GRANT, "refresh_token": refresh}
    status, payload, _ = post(oauth_server.token_url, form, basic("desk-app", "nope"))
    assert (status, payload["error"]) == (401, "invalid_client")
    status, payload, _ = post(oauth_server.token_url, form, basic("desk-app", "desk-secret"))
    assert status == 200
    oauth_server.require_secret = True
    status, payload = token(oauth_server, REFRESH_GRANT, refresh_token=payload["refresh_token"])
    assert (status, payload["error"]) == (401, "invalid_client")


def test_revoke_ends_refresh_and_access_tokens(oauth_server: OAuthServer) -> None:
    refresh = oauth_server.grant(AGENT)
    _, payload = token(oauth_server, REFRESH_GRANT, refresh_token=refresh)
    access, refresh = payload["access_token"], payload["refresh_token"]
    other = oauth_server.grant("other@example.com")
    assert introspect(oauth_server, access)["active"] is True

    oauth_server.revoke(AGENT)

    assert introspect(oauth_server, access) == {"active": False}
    assert oauth_server.valid(access) is None
    assert token(oauth_server, REFRESH_GRANT, refresh_token=refresh) == (
        400,
        {"error": "invalid_grant", "error_description": REVOKED_DESCRIPTION},
    )
    assert token(oauth_server, REFRESH_GRANT, refresh_token=other)[0] == 200
    # A new consent works again.
    assert token(oauth_server, REFRESH_GRANT, refresh_token=oauth_server.grant(AGENT))[0] == 200


def test_expired_access_tokens_are_inactive_but_refresh_works(oauth_server: OAuthServer) -> None:
    refresh = oauth_server.grant(AGENT)
    _, payload = token(oauth_server, REFRESH_GRANT, refresh_token=refresh)
    oauth_server.expire_access_tokens()
    assert introspect(oauth_server, payload["access_token"]) == {"active": False}
    _, payload = token(oauth_server, REFRESH_GRANT, refresh_token=payload["refresh_token"])
    assert introspect(oauth_server, payload["access_token"])["active"] is True
    oauth_server.access_lifetime = 0  # born expired
    _, payload = token(oauth_server, REFRESH_GRANT, refresh_token=payload["refresh_token"])
    assert payload["expires_in"] == 0
    assert oauth_server.valid(payload["access_token"]) is None


def test_fail_next_answers_with_the_status_and_changes_nothing(oauth_server: OAuthServer) -> None:
    refresh = oauth_server.grant(AGENT)
    oauth_server.fail_next(2, status=503)
    for _ in range(2):
        status, text, got = post(
            oauth_server.token_url,
            {"grant_type": REFRESH_GRANT, "client_id": "desk-app", "refresh_token": refresh},
        )
        assert status == 503
        assert got["Content-Type"] == "text/plain"
        assert "503" in text
    # Introspection is not a token request: it still answers during the outage.
    oauth_server.fail_next(1, status=500)
    assert introspect(oauth_server, "nothing") == {"active": False}
    assert token(oauth_server, REFRESH_GRANT, refresh_token=refresh)[0] == 500
    # The refresh token was never used up by the failed requests.
    assert token(oauth_server, REFRESH_GRANT, refresh_token=refresh)[0] == 200
    assert oauth_server.count(REFRESH_GRANT) == 4
    assert len(oauth_server.issued_access_tokens) == 1


def test_stop_and_start_again_on_the_same_port() -> None:
    server = OAuthServer().start()
    try:
        url = server.token_url
        server.stop()
        with pytest.raises(urllib.error.URLError):
            post(url, {"grant_type": CLIENT_CREDENTIALS_GRANT})
        server.start()
        assert server.token_url == url
        status, _, _ = post(
            url, {"grant_type": CLIENT_CREDENTIALS_GRANT}, basic("desk-app", "desk-secret")
        )
        assert status == 200
    finally:
        server.stop()


# -- device code (RFC 8628) ---------------------------------------------------------------------


def start_device_flow(server: OAuthServer, scope: str = "imap") -> dict[str, Any]:
    status, payload, _ = post(server.device_url, {"client_id": server.client_id, "scope": scope})
    assert status == 200
    return payload  # type: ignore[no-any-return]


def test_device_flow_pending_then_approved(oauth_server: OAuthServer) -> None:
    oauth_server.device_interval = 0  # poll as fast as the test likes
    flow = start_device_flow(oauth_server, scope="offline_access imap")
    assert flow["verification_uri"] == oauth_server.verification_uri
    assert flow["verification_uri_complete"].endswith("user_code=" + flow["user_code"])
    assert flow["expires_in"] == 600
    assert flow["interval"] == 0
    assert len(flow["user_code"]) == 9 and flow["user_code"][4] == "-"
    assert oauth_server.pending_codes == [flow["user_code"]]
    with urllib.request.urlopen(flow["verification_uri_complete"], timeout=10) as page:
        assert flow["user_code"] in page.read().decode()

    status, payload = token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])
    assert (status, payload["error"]) == (400, "authorization_pending")

    assert oauth_server.approve() == flow["user_code"]
    assert oauth_server.pending_codes == []
    status, payload = token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])
    assert status == 200
    assert oauth_server.valid(payload["access_token"]) == AGENT
    assert payload["scope"] == "offline_access imap"
    assert payload["refresh_token"] == oauth_server.issued_refresh_tokens[-1]
    # Redeemed once only; its refresh token works like any other.
    status, payload2 = token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])
    assert (status, payload2["error"]) == (400, "invalid_grant")
    assert token(oauth_server, REFRESH_GRANT, refresh_token=payload["refresh_token"])[0] == 200
    assert oauth_server.count(DEVICE_GRANT) == 3


def test_device_flow_denied_expired_and_named_codes(oauth_server: OAuthServer) -> None:
    oauth_server.device_interval = 0
    first = start_device_flow(oauth_server)
    second = start_device_flow(oauth_server)
    assert oauth_server.pending_codes == [first["user_code"], second["user_code"]]
    oauth_server.approve(first["user_code"].lower().replace("-", ""), user="boss@example.com")
    oauth_server.deny()  # the latest pending one: the second
    _, payload = token(oauth_server, DEVICE_GRANT, device_code=second["device_code"])
    assert payload["error"] == "access_denied"
    _, payload = token(oauth_server, DEVICE_GRANT, device_code=first["device_code"])
    assert oauth_server.valid(payload["access_token"]) == "boss@example.com"
    with pytest.raises(LookupError):
        oauth_server.approve()

    oauth_server.device_lifetime = 0
    expired = start_device_flow(oauth_server)
    assert oauth_server.pending_codes == []
    _, payload = token(oauth_server, DEVICE_GRANT, device_code=expired["device_code"])
    assert payload["error"] == "expired_token"
    _, payload = token(oauth_server, DEVICE_GRANT, device_code="no-such-code")
    assert payload["error"] == "invalid_grant"


@pytest.mark.slow
def test_device_flow_slow_down(oauth_server: OAuthServer) -> None:
    flow = start_device_flow(oauth_server)
    assert flow["interval"] == 1
    assert token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])[1]["error"] == (
        "authorization_pending"
    )
    _, payload = token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])
    assert payload["error"] == "slow_down"
    time.sleep(1.2)  # on time for the announced interval, too soon after slow_down (+5 s)
    _, payload = token(oauth_server, DEVICE_GRANT, device_code=flow["device_code"])
    assert payload["error"] == "slow_down"
    assert oauth_server.errors == [
        (DEVICE_GRANT, "authorization_pending"),
        (DEVICE_GRANT, "slow_down"),
        (DEVICE_GRANT, "slow_down"),
    ]


# -- jwt-bearer (Google service accounts) -------------------------------------------------------


def service_account(server: OAuthServer, tmp_path: Path) -> dict[str, str]:
    info: dict[str, str] = json.loads(server.service_account_key_file(tmp_path).read_text())
    return info


def assertion(info: dict[str, str], **claims: Any) -> str:
    now = int(time.time())
    base = {
        "iss": info["client_email"],
        "aud": info["token_uri"],
        "scope": "https://mail.google.com/",
        "iat": now,
        "exp": now + 3600,
    }
    return sign_jwt(info["private_key"], {**base, **claims}, info["private_key_id"])


def jwt_grant(server: OAuthServer, signed: str) -> tuple[int, Any]:
    status, payload, _ = post(server.token_url, {"grant_type": JWT_GRANT, "assertion": signed})
    return status, payload


def test_key_file_is_google_style(oauth_server: OAuthServer, tmp_path: Path) -> None:
    path = oauth_server.service_account_key_file(tmp_path, token_uri="https://elsewhere/token")
    info = json.loads(path.read_text())
    assert info["type"] == "service_account"
    assert info["token_uri"] == "https://elsewhere/token"
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert {"client_email", "private_key_id", "client_id"} <= info.keys()
    assert path.stat().st_mode & 0o077 == 0


def test_jwt_bearer_acts_as_a_delegated_user(oauth_server: OAuthServer, tmp_path: Path) -> None:
    info = service_account(oauth_server, tmp_path)
    oauth_server.delegated.add("support@example.com")
    status, payload = jwt_grant(oauth_server, assertion(info, sub="support@example.com"))
    assert status == 200
    assert "refresh_token" not in payload
    assert payload["scope"] == "https://mail.google.com/"
    assert oauth_server.valid(payload["access_token"]) == "support@example.com"
    assert oauth_server.count(JWT_GRANT) == 1


def test_jwt_bearer_refusals(oauth_server: OAuthServer, tmp_path: Path) -> None:
    info = service_account(oauth_server, tmp_path)
    stranger = service_account(OAuthServer(), tmp_path)  # a key registered elsewhere
    forged = {**stranger, "client_email": info["client_email"]}
    now = int(time.time())
    cases = {
        "not delegated": (assertion(info, sub="boss@example.com"), "unauthorized_client"),
        "unknown account": (assertion(stranger, sub="boss@example.com"), "invalid_grant"),
        "wrong signature": (assertion(forged), "invalid_grant"),
        "other audience": (assertion(info, aud="https://example.com/token"), "invalid_grant"),
        "expired": (assertion(info, iat=now - 7200, exp=now - 3600), "invalid_grant"),
        "too long": (assertion(info, exp=now + 86400), "invalid_grant"),
        "no scope": (assertion(info, scope=""), "invalid_scope"),
        "garbage": ("not.a.jwt", "invalid_grant"),
    }  # fmt: skip
    for name, (signed, error) in cases.items():
        status, payload = jwt_grant(oauth_server, signed)
        assert (status, payload["error"]) == (400, error), name
    # Google's audience, as google-auth sends it, is taken too.
    google = assertion(info, aud=GOOGLE_TOKEN_AUDIENCE, sub="boss@example.com")
    oauth_server.delegated.add("boss@example.com")
    assert jwt_grant(oauth_server, google)[0] == 200
    # Without `sub` the token is for the service account itself.
    _, payload = jwt_grant(oauth_server, assertion(info))
    assert oauth_server.valid(payload["access_token"]) == info["client_email"]


class UrllibTransport:
    """google-auth's transport interface (google.auth.transport.Request) over urllib, so the
    test needs neither requests nor urllib3."""

    class Response:
        def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self.status, self.headers, self.data = status, headers, data

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> UrllibTransport.Response:
        request = urllib.request.Request(url, body, headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or 10) as response:
                return self.Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return self.Response(exc.code, dict(exc.headers), exc.read())


def test_google_auth_service_account_credentials(oauth_server: OAuthServer, tmp_path: Path) -> None:
    from google.oauth2 import service_account as service_account_module  # the oauth extra

    key_file = oauth_server.service_account_key_file(tmp_path)
    oauth_server.delegated.add("support@example.com")
    credentials = service_account_module.Credentials.from_service_account_file(
        str(key_file), scopes=["https://mail.google.com/"], subject="support@example.com"
    )
    credentials.refresh(UrllibTransport())
    assert oauth_server.valid(credentials.token) == "support@example.com"
    assert oauth_server.count(JWT_GRANT) == 1

    refused = credentials.with_subject("boss@example.com")
    with pytest.raises(Exception, match="unauthorized_client"):
        refused.refresh(UrllibTransport())


# -- hooks ------------------------------------------------------------------------------------


def test_on_introspect_runs_before_the_answer(oauth_server: OAuthServer) -> None:
    _, payload = token(oauth_server, CLIENT_CREDENTIALS_GRANT, client_secret="desk-secret")
    seen: list[str] = []

    def hook() -> None:
        seen.append(threading.current_thread().name)
        oauth_server.revoke("support@example.com")  # the answer must already see this

    oauth_server.on_introspect = hook
    assert introspect(oauth_server, payload["access_token"]) == {"active": False}
    assert len(seen) == 1 and seen[0] != threading.current_thread().name


def test_on_token_runs_after_the_answer_was_sent(oauth_server: OAuthServer) -> None:
    calls: list[tuple[str, int]] = []
    received = threading.Event()

    def hook(grant_type: str) -> None:
        # The client already holds the whole answer: it can read it before we return.
        assert received.wait(5)
        calls.append((grant_type, len(oauth_server.issued_refresh_tokens)))

    oauth_server.on_token = hook
    refresh = oauth_server.grant(AGENT)
    result: list[tuple[int, Any]] = []

    def client() -> None:
        result.append(token(oauth_server, REFRESH_GRANT, refresh_token=refresh))
        received.set()

    worker = threading.Thread(target=client)
    worker.start()
    worker.join(10)
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert result[0][0] == 200
    assert calls == [(REFRESH_GRANT, 2)]
    # Not called for errors.
    token(oauth_server, REFRESH_GRANT, refresh_token=refresh)
    assert len(calls) == 1


def test_a_failing_hook_is_kept_and_the_answer_still_goes_out() -> None:
    with OAuthServer() as server:
        server.on_introspect = lambda: 1 / 0  # type: ignore[func-returns-value]
        assert introspect(server, "x") == {"active": False}
        [error] = server.internal_errors
        assert isinstance(error, ZeroDivisionError)


# -- Dovecot's oauth2 passdb --------------------------------------------------------------------


def imap(server: DovecotServer) -> imapclient.IMAPClient:
    return imapclient.IMAPClient(server.host, server.port, ssl=False, timeout=10)


def app_token(oauth_server: OAuthServer) -> str:
    _, payload = token(oauth_server, CLIENT_CREDENTIALS_GRANT, client_secret="desk-secret")
    return str(payload["access_token"])


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_takes_a_valid_token(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, mechanism: str
) -> None:
    dovecot_oauth.append(MESSAGE)  # the fixture's own password login still works
    access = app_token(oauth_server)
    with imap(dovecot_oauth) as client:
        assert f"AUTH={mechanism}".encode() in client.capabilities()
        if mechanism == "XOAUTH2":
            client.oauth2_login(oauth_server.app_user, access)
        else:
            client.oauthbearer_login(oauth_server.app_user, access)
        assert client.select_folder("INBOX")[b"EXISTS"] == 1
    # Every login asks the OAuth server: no auth cache.
    with imap(dovecot_oauth) as client:
        client.oauth2_login(oauth_server.app_user, access)
    assert oauth_server.requests.count(("/introspect", "")) == 2


@pytest.mark.slow
def test_dovecot_refuses_revoked_expired_and_foreign_tokens(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer
) -> None:
    user = oauth_server.app_user
    access = app_token(oauth_server)
    oauth_server.expire_access_tokens()
    foreign = oauth_server.grant("other@example.com")
    _, payload = token(oauth_server, REFRESH_GRANT, refresh_token=foreign)
    refresh = oauth_server.grant(user)
    _, mine = token(oauth_server, REFRESH_GRANT, refresh_token=refresh)
    logins: list[tuple[str, Callable[[imapclient.IMAPClient], object]]] = [
        ("expired", lambda c: c.oauth2_login(user, access)),
        ("expired bearer", lambda c: c.oauthbearer_login(user, access)),
        ("another user's", lambda c: c.oauth2_login(user, payload["access_token"])),
        ("token as password", lambda c: c.login(user, mine["access_token"])),
    ]
    for name, login in logins:
        with imap(dovecot_oauth) as client, pytest.raises(LoginError):
            login(client)
            pytest.fail(f"{name} token logged in")

    with imap(dovecot_oauth) as client:  # refused above only for what it was
        client.oauth2_login(user, mine["access_token"])
    oauth_server.revoke(user)
    with imap(dovecot_oauth) as client, pytest.raises(LoginError):
        client.oauth2_login(user, mine["access_token"])


# -- SMTP with XOAUTH2 and OAUTHBEARER ---------------------------------------------------------


@pytest.fixture
def oauth_smtp(oauth_server: OAuthServer) -> Iterator[SmtpServer]:
    """An SMTP server taking oauth_server's tokens, for the user they were issued to."""
    server = SmtpServer()
    server.offer_oauth(lambda user, access: oauth_server.valid(access) == user)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def send(server: SmtpServer, username: str | None = None, access: str | None = None) -> None:
    async def generate() -> str:
        assert access is not None
        return access

    smtp = aiosmtplib.SMTP(
        hostname=server.host,
        port=server.port,
        timeout=10,
        start_tls=False,
        username=username,
        oauth_token_generator=generate if access is not None else None,
    )
    async with smtp:
        await smtp.sendmail("support@example.com", ["x@example.org"], MESSAGE)


def test_smtp_xoauth2_with_a_valid_token(oauth_smtp: SmtpServer, oauth_server: OAuthServer) -> None:
    access = app_token(oauth_server)
    asyncio.run(send(oauth_smtp, oauth_server.app_user, access))
    [arrival] = oauth_smtp.arrivals
    assert arrival.data == MESSAGE
    assert oauth_smtp.auth_log == [AuthAttempt("support@example.com", "XOAUTH2", True)]


def test_smtp_offers_only_the_oauth_mechanisms(oauth_smtp: SmtpServer) -> None:
    with smtplib.SMTP(oauth_smtp.host, oauth_smtp.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["OAUTHBEARER", "XOAUTH2"]


def test_smtp_refuses_a_bad_token_with_535(
    oauth_smtp: SmtpServer, oauth_server: OAuthServer
) -> None:
    access = app_token(oauth_server)
    oauth_server.revoke(oauth_server.app_user)
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        asyncio.run(send(oauth_smtp, oauth_server.app_user, access))
    assert caught.value.code == 535
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):  # right token, wrong user
        asyncio.run(send(oauth_smtp, "other@example.com", app_token(oauth_server)))
    assert oauth_smtp.arrivals == []
    assert [a.ok for a in oauth_smtp.auth_log] == [False, False]


def test_smtp_xoauth2_error_challenge_comes_first(
    oauth_smtp: SmtpServer, oauth_server: OAuthServer
) -> None:
    with smtplib.SMTP(oauth_smtp.host, oauth_smtp.port, timeout=10) as client:
        client.ehlo()
        initial = base64.b64encode(b"user=support@example.com\x01auth=Bearer nope\x01\x01")
        code, challenge = client.docmd("AUTH", "XOAUTH2 " + initial.decode())
        assert code == 334
        assert json.loads(base64.b64decode(challenge))["status"] == "401"
        code, _ = client.docmd("")
        assert code == 535


def test_smtp_mail_without_auth_is_530(oauth_smtp: SmtpServer) -> None:
    with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
        asyncio.run(send(oauth_smtp))
    assert caught.value.code == 530
    assert oauth_smtp.arrivals == []


def test_smtp_oauthbearer(oauth_smtp: SmtpServer, oauth_server: OAuthServer) -> None:
    """smtplib with RFC 7628's message; on a bad token it answers the challenge with ^A."""

    def bearer(access: str) -> Callable[[bytes | None], str]:
        def respond(challenge: bytes | None = None) -> str:
            if challenge is None:
                return f"n,a=support@example.com,\x01host=127.0.0.1\x01auth=Bearer {access}\x01\x01"
            assert json.loads(challenge)["status"] == "invalid_token"
            return "\x01"

        return respond

    with smtplib.SMTP(oauth_smtp.host, oauth_smtp.port, timeout=10) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.auth("OAUTHBEARER", bearer("nope"), initial_response_ok=True)
        assert caught.value.smtp_code == 535
        client.auth("OAUTHBEARER", bearer(app_token(oauth_server)), initial_response_ok=True)
        client.sendmail("support@example.com", ["x@example.org"], MESSAGE)
    assert len(oauth_smtp.arrivals) == 1
    assert oauth_smtp.auth_log == [
        AuthAttempt("support@example.com", "OAUTHBEARER", False),
        AuthAttempt("support@example.com", "OAUTHBEARER", True),
    ]
