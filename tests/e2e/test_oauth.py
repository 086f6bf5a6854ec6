"""OAuth2 sign-in end to end: a real Dovecot checking tokens with its oauth2 passdb against a
local OAuth2 server (tests/support/oauthserver.py), a real SMTP server taking XOAUTH2 only,
and mailsupport's commands as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mailsupport.config import Settings, load_settings
from mailsupport.oauth.account import account_for
from mailsupport.oauth.grants import Grant
from mailsupport.oauth.tokens import forget_keepers
from mailsupport.store import tokens as rows
from mailsupport.store.db import Store
from mailsupport.store.models import OutboxItem
from tests.support.cli import cli
from tests.support.daemons import WAIT, wait_until
from tests.support.imapservers import DovecotServer
from tests.support.mailboxes import imap_env, mail, mid, stored_ids
from tests.support.mailfactory import make_message
from tests.support.oauthserver import (
    CLIENT_CREDENTIALS_GRANT,
    JWT_GRANT,
    REFRESH_GRANT,
    OAuthServer,
)
from tests.support.paths import ROOT
from tests.support.processes import mailsupport_process
from tests.support.smtpserver import SmtpServer

pytestmark = pytest.mark.slow  # each starts Dovecot and an OAuth2 server

REVOKED = 'sign-in for support@example.com was revoked: run "mailsupport auth login"'


@pytest.fixture(autouse=True)
def fresh_keepers() -> Iterator[None]:
    """Each test starts as a new process would: no token remembered in memory."""
    forget_keepers()
    yield
    forget_keepers()


def oauth_env(
    env: dict[str, str], dovecot: DovecotServer, server: OAuthServer, *, secret: bool = True
) -> dict[str, str]:
    """IMAP through `dovecot` signed in with tokens of `server` (a generic OAuth2 server):
    client credentials with `secret`, else a person's device-code sign-in."""
    found = imap_env(env, dovecot, imap_auth="oauth2", imap_start="all")
    del found["MAILSUPPORT_IMAP_PASSWORD"]  # a token or nothing
    found |= generic_oauth(server)
    if secret:
        found["MAILSUPPORT_OAUTH_CLIENT_SECRET"] = server.client_secret
    return found


def generic_oauth(server: OAuthServer) -> dict[str, str]:
    """The settings of a person's device-code sign-in through `server` (no secret)."""
    return {
        "MAILSUPPORT_OAUTH_PROVIDER": "generic",
        "MAILSUPPORT_OAUTH_CLIENT_ID": server.client_id,
        "MAILSUPPORT_OAUTH_TOKEN_URL": server.token_url,
        "MAILSUPPORT_OAUTH_DEVICE_URL": server.device_url,
    }


def with_smtp(
    env: dict[str, str],
    smtp: SmtpServer,
    server: OAuthServer,
    mechanisms: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER"),
) -> dict[str, str]:
    """Outgoing mail through `smtp`, which takes only these mechanisms with a valid token."""
    smtp.stop()
    smtp.offer_oauth(lambda user, token: server.valid(token) == user, mechanisms)
    smtp.start()
    return env | {
        "MAILSUPPORT_SMTP_HOST": smtp.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "5",
        "MAILSUPPORT_SMTP_AUTH": "oauth2",
    }


def signed_in_person(store: Store, env: dict[str, str], server: OAuthServer) -> str:
    """As if `auth login` had run long ago: the stored refresh token of the mailbox's user,
    whose access token has expired. Returns the refresh token."""
    refresh = server.grant(server.app_user)
    settings = settings_of(env)
    account = account_for(settings, "imap")
    assert account is not None and account.flow == "device-code"
    old = Grant("expired-token", datetime.now(UTC) - timedelta(hours=1), refresh)
    rows.signed_in(store, account, old, datetime.now(UTC) - timedelta(days=30))
    return refresh


def settings_of(env: dict[str, str]) -> Settings:
    """The settings `env` makes (its MAILSUPPORT_* names that are settings)."""
    names = {k.removeprefix("MAILSUPPORT_").lower(): v for k, v in env.items()}
    return load_settings(**{k: v for k, v in names.items() if k in Settings.model_fields})


def customers_mail(store: Store) -> list[str]:
    """The Message-IDs of the customers' mail stored (our acknowledgements left out)."""
    return [i for i in stored_ids(store) if i.endswith("@customer.example.org")]


def stored_refresh_token(store: Store) -> str:
    [row] = rows.every(store)
    return row.refresh_token


def test_poll_and_delivery_sign_in_with_one_application_token(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = with_smtp(oauth_env(env_for_cli, dovecot_oauth, oauth_server), smtp_server, oauth_server)
    assert cli(env, "poll").exit_code == 0  # the first poll: what is there is history
    dovecot_oauth.append(mail(1))
    done = cli(env, "poll")
    assert done.exit_code == 0, done.output
    assert customers_mail(store) == [mid(1)]
    [ack] = smtp_server.arrivals  # the acknowledgement went out over XOAUTH2
    assert ack.rcpt_tos == ("anna@customer.example.org",)
    assert [(a.mechanism, a.ok) for a in smtp_server.auth_log] == [("XOAUTH2", True)]
    # IMAP and SMTP sign in as the same mailbox through the same application: one token.
    assert oauth_server.count(CLIENT_CREDENTIALS_GRANT) == 1

    # A new process takes the token from the database instead of asking again.
    forget_keepers()
    dovecot_oauth.append(mail(2))
    assert cli(env, "poll").exit_code == 0
    assert customers_mail(store) == [mid(1), mid(2)]
    assert oauth_server.count(CLIENT_CREDENTIALS_GRANT) == 1


def test_a_token_the_servers_stop_taking_is_renewed_once(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = with_smtp(
        oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False), smtp_server, oauth_server
    )
    first = signed_in_person(store, env, oauth_server)
    assert cli(env, "poll").exit_code == 0  # the first poll: what is there is history
    dovecot_oauth.append(mail(1))
    assert cli(env, "poll").exit_code == 0
    # The stored access token had expired: renewed once, for IMAP and SMTP alike, and the
    # rotated refresh token is the one stored.
    assert oauth_server.count(REFRESH_GRANT) == 1
    assert stored_refresh_token(store) == oauth_server.issued_refresh_tokens[-1] != first
    assert len(smtp_server.arrivals) == 1

    # The servers stop taking the token before it expires (revoked early, a clock skew).
    oauth_server.expire_access_tokens()
    forget_keepers()
    dovecot_oauth.append(mail(2))
    assert cli(env, "poll").exit_code == 0
    assert customers_mail(store) == [mid(1), mid(2)]
    assert oauth_server.count(REFRESH_GRANT) == 2
    assert len(smtp_server.arrivals) == 2

    # And a valid one is used, not renewed on every poll.
    forget_keepers()
    dovecot_oauth.append(mail(3))
    assert cli(env, "poll").exit_code == 0
    assert oauth_server.count(REFRESH_GRANT) == 2


def test_a_revoked_grant_stops_with_exit_2_and_says_what_to_do(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    signed_in_person(store, env, oauth_server)
    oauth_server.revoke(oauth_server.app_user)
    dovecot_oauth.append(mail(1))
    done = cli(env, "poll")
    assert done.exit_code == 2
    assert REVOKED in done.stderr
    assert "Traceback" not in done.output
    asked = oauth_server.count(REFRESH_GRANT)

    # Known from the database from now on: no new request to the server for each poll.
    forget_keepers()
    again = cli(env, "poll")
    assert again.exit_code == 2 and REVOKED in again.stderr
    assert oauth_server.count(REFRESH_GRANT) == asked
    status = json.loads(cli(env, "auth", "status", "--json").stdout)
    assert [s["state"] for s in status] == ["revoked"]
    assert REVOKED in status[0]["last_error"]


def test_the_device_flow_signs_in_when_the_person_approves(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    not_yet = cli(env, "poll")
    assert not_yet.exit_code == 2
    assert 'support@example.com is not signed in: run "mailsupport auth login"' in not_yet.stderr

    login = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "auth", "login"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert login.stdout is not None
        first = login.stdout.readline()  # printed before it waits
        assert oauth_server.verification_uri in first
        code = first.rsplit("enter the code ", 1)[1].strip()
        assert code in oauth_server.pending_codes
        oauth_server.approve(code, user=oauth_server.app_user)
        out, err = login.communicate(timeout=WAIT)
    finally:
        if login.poll() is None:
            login.kill()
    assert login.returncode == 0, err
    assert "signed in support@example.com for IMAP" in out
    assert stored_refresh_token(store) == oauth_server.issued_refresh_tokens[-1]

    dovecot_oauth.append(mail(1))
    assert cli(env, "poll").exit_code == 0
    assert customers_mail(store) == [mid(1)]
    assert oauth_server.count(REFRESH_GRANT) == 0  # the fresh token from the sign-in served


def test_a_rotated_refresh_token_survives_kill_9_right_after_it_arrived(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    first = signed_in_person(store, env, oauth_server)
    dovecot_oauth.append(mail(1))
    poller = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "poll"],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = threading.Event()

    def kill_the_poller() -> None:
        # Dovecot asks about the new token: the poller has it and waits for IMAP's answer.
        if not killed.is_set():
            os.kill(poller.pid, signal.SIGKILL)
            poller.wait()
            killed.set()

    oauth_server.on_introspect = kill_the_poller
    try:
        assert poller.wait(timeout=WAIT) == -signal.SIGKILL
    finally:
        oauth_server.on_introspect = None
        if poller.poll() is None:
            poller.kill()
    assert killed.is_set()
    assert oauth_server.count(REFRESH_GRANT) == 1
    rotated = oauth_server.issued_refresh_tokens[-1]
    assert rotated != first  # the old one is refused by the server from now on
    assert stored_refresh_token(store) == rotated

    done = mailsupport_process(env, "poll")
    assert done.returncode == 0, done.stderr
    assert customers_mail(store) == [mid(1)]
    assert oauth_server.count(REFRESH_GRANT) == 1  # the stored access token still served


def test_processes_share_one_token_and_only_one_renews_it(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    signed_in_person(store, env, oauth_server)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    checks = [
        subprocess.Popen(
            [sys.executable, "-m", "mailsupport", "doctor"],
            env=full_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [check.communicate(timeout=60)[0] for check in checks]
    for check, output in zip(checks, outputs, strict=True):
        # A second renewal with the rotated-away refresh token would be refused as revoked.
        assert "ok    IMAP" in output, output
        assert "token valid until" in output
        assert check.returncode in (0, 1)  # doctor fails on SMTP not being set up: not ours
    assert oauth_server.count(REFRESH_GRANT) == 1


def test_a_google_service_account_signs_in_as_the_mailbox(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
) -> None:
    key_file = oauth_server.service_account_key_file(tmp_path, oauth_server.token_url)
    oauth_server.delegated.add(oauth_server.app_user)
    env = imap_env(env_for_cli, dovecot_oauth, imap_auth="oauth2", imap_start="all")
    del env["MAILSUPPORT_IMAP_PASSWORD"]
    env |= {"MAILSUPPORT_OAUTH_PROVIDER": "google", "MAILSUPPORT_OAUTH_KEY_FILE": str(key_file)}
    dovecot_oauth.append(mail(1))
    done = cli(env, "poll")
    assert done.exit_code == 0, done.output
    assert customers_mail(store) == [mid(1)]
    assert oauth_server.count(JWT_GRANT) == 1

    # Delegation withdrawn in the Admin console: a clear configuration error.
    oauth_server.delegated.discard(oauth_server.app_user)
    oauth_server.expire_access_tokens()
    forget_keepers()
    refused = cli(env, "poll")
    assert refused.exit_code == 2
    assert "domain-wide delegation" in refused.stderr


def test_an_unreachable_token_server_is_a_temporary_failure(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server)
    oauth_server.fail_next(1, status=503)
    dovecot_oauth.append(mail(1))
    down = cli(env, "poll")
    assert down.exit_code == 75
    assert "OAuth2 server 127.0.0.1" in down.stderr and "503" in down.stderr
    assert cli(env, "poll").exit_code == 0  # the next run gets its token
    assert customers_mail(store) == [mid(1)]


def test_status_doctor_and_auth_commands_show_the_sign_in_never_the_token(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server)
    before = json.loads(cli(env, "auth", "status", "--json").stdout)
    assert [(s["login"], s["state"]) for s in before] == [("support@example.com", "not-used-yet")]

    doctor = cli(env, "doctor")
    assert "ok    IMAP: logged in to support@example.com@127.0.0.1" in doctor.stdout
    assert "signed in with OAuth2 generic client-credentials as support@example.com" in (
        doctor.stdout
    )
    assert "token valid until" in doctor.stdout

    status = cli(env, "status", "--offline")
    assert "sign-in support@example.com: signed-in, last succeeded 20" in status.stdout
    listed = cli(env, "auth", "status")
    assert "support@example.com (IMAP, generic client-credentials): signed-in" in listed.stdout
    described = json.loads(cli(env, "auth", "status", "--json").stdout)
    assert described[0]["signed_in_at"] is not None
    assert described[0]["expires_at"] is not None
    everything = doctor.stdout + status.stdout + listed.stdout + json.dumps(described)
    for token in oauth_server.issued_access_tokens:
        assert token not in everything

    assert cli(env, "auth", "logout").stdout.strip() == "forgot 1 stored sign-in(s)"
    after = json.loads(cli(env, "auth", "status", "--json").stdout)
    assert after[0]["state"] == "not-used-yet"


def test_without_the_oauth_extra_the_error_names_it(
    env_for_cli: dict[str, str], tmp_path: Path
) -> None:
    # A stand-in package that cannot be imported, ahead of the real one on the path.
    shadow = tmp_path / "shadow" / "authlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {
        **os.environ,
        **env_for_cli,
        "PYTHONPATH": f"{shadow.parent}{os.pathsep}{ROOT}",
        "MAILSUPPORT_IMAP_HOST": "127.0.0.1",
        "MAILSUPPORT_IMAP_USER": "support@example.com",
        "MAILSUPPORT_IMAP_AUTH": "oauth2",
        "MAILSUPPORT_OAUTH_PROVIDER": "generic",
        "MAILSUPPORT_OAUTH_CLIENT_ID": "desk-app",
        "MAILSUPPORT_OAUTH_CLIENT_SECRET": "desk-secret",
        "MAILSUPPORT_OAUTH_TOKEN_URL": "http://127.0.0.1:9/token",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mailsupport", "auth", "login"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "oauth extra" in done.stderr and "pip install '.[oauth]'" in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback


def test_the_daemon_keeps_sending_while_the_sign_in_is_revoked_and_says_so_once(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
    daemons: object,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    env |= {
        "MAILSUPPORT_SMTP_HOST": smtp_server.host,
        "MAILSUPPORT_SMTP_PORT": str(smtp_server.port),
        "MAILSUPPORT_SMTP_SECURITY": "none",
        "MAILSUPPORT_SMTP_TIMEOUT": "5",
        "MAILSUPPORT_IMAP_POLL_SECONDS": "1",
        "MAILSUPPORT_IMAP_RETRY_MAX_SECONDS": "1",
    }
    signed_in_person(store, env, oauth_server)
    oauth_server.revoke(oauth_server.app_user)
    # A customer's mail that came in another way waits in the outbox for its
    # acknowledgement: the SMTP server was down then, and its retry is due now.
    smtp_server.stop()
    assert cli(env, "ingest", input=make_message("pipe@customer.example.org")).exit_code == 0
    smtp_server.start()
    with store.write() as session:
        session.execute(sa.update(OutboxItem).values(next_attempt_at=datetime.now(UTC)))
    assert smtp_server.arrivals == []

    process = daemons(env | {"MAILSUPPORT_LOG_LEVEL": "DEBUG"})  # type: ignore[operator]
    wait_until(lambda: smtp_server.arrivals, "the queued acknowledgement sent")
    # Tried again every second (each try reads the stored sign-in, not the token server),
    # said once at ERROR; the repeats only at DEBUG.
    process.wait_for_log(f"DEBUG {REVOKED}", count=3)
    assert process.log.count(f"ERROR {REVOKED}") == 1
    assert oauth_server.count(REFRESH_GRANT) <= 1
    assert process.stop() == 0


def test_microsoft_settings_work_against_any_token_endpoint_given(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    smtp_server: SmtpServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    """The Microsoft provider (client secret in the form, its default scope), pointed at the
    local server the way MAILSUPPORT_OAUTH_TOKEN_URL lets tests and proxies do; SMTP that
    offers only OAUTHBEARER."""
    oauth_server.require_secret = True
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server)
    env |= {"MAILSUPPORT_OAUTH_PROVIDER": "microsoft", "MAILSUPPORT_OAUTH_TENANT": "contoso"}
    env = with_smtp(env, smtp_server, oauth_server, mechanisms=("OAUTHBEARER",))
    assert cli(env, "poll").exit_code == 0
    dovecot_oauth.append(mail(1))
    done = cli(env, "poll")
    assert done.exit_code == 0, done.output
    assert customers_mail(store) == [mid(1)]
    assert [(a.mechanism, a.ok) for a in smtp_server.auth_log] == [("OAUTHBEARER", True)]
    assert len(smtp_server.arrivals) == 1
    assert oauth_server.count(CLIENT_CREDENTIALS_GRANT) == 1


def test_tokens_never_reach_the_log(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    env_for_cli: dict[str, str],
    store: Store,
) -> None:
    env = oauth_env(env_for_cli, dovecot_oauth, oauth_server, secret=False)
    first = signed_in_person(store, env, oauth_server)
    dovecot_oauth.append(mail(1))
    done = mailsupport_process(env | {"MAILSUPPORT_LOG_LEVEL": "DEBUG"}, "-v", "poll")
    assert done.returncode == 0, done.stderr
    log = done.stderr.decode()
    assert "renewed the OAuth2 token of support@example.com" in log
    secrets = [first, *oauth_server.issued_refresh_tokens, *oauth_server.issued_access_tokens]
    assert len(secrets) >= 3
    for secret in secrets:
        assert secret not in log


def test_a_renewal_left_unfinished_by_a_crashed_process_is_taken_over(
    oauth_server: OAuthServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    from mailsupport.oauth.tokens import LEASE, TokenKeeper

    env = {
        **env_for_cli,
        "MAILSUPPORT_IMAP_HOST": "127.0.0.1",
        "MAILSUPPORT_IMAP_USER": oauth_server.app_user,
        "MAILSUPPORT_IMAP_AUTH": "oauth2",
        **generic_oauth(oauth_server),
    }
    signed_in_person(store, env, oauth_server)
    account = account_for(settings_of(env), "imap")
    assert account is not None
    now = [datetime.now(UTC)]
    # Another process took the lease to renew the token, and died.
    [row] = rows.every(store)
    assert rows.claim(store, account.key, row.version, now[0], now[0] + LEASE)

    def sleep(seconds: float) -> None:  # time passes while this one waits
        now[0] += timedelta(seconds=20)

    keeper = TokenKeeper(store, account, timeout=5, clock=lambda: now[0], sleep=sleep)
    token = keeper.access_token()
    assert oauth_server.valid(token) == oauth_server.app_user
    assert now[0] - datetime.now(UTC) >= LEASE - timedelta(seconds=20)  # it waited the lease out
    assert oauth_server.count(REFRESH_GRANT) == 1


def test_a_declined_device_sign_in_stops_with_exit_2(
    oauth_server: OAuthServer, env_for_cli: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **env_for_cli,
        "PYTHONPATH": str(ROOT),
        "MAILSUPPORT_IMAP_HOST": "127.0.0.1",
        "MAILSUPPORT_IMAP_USER": oauth_server.app_user,
        "MAILSUPPORT_IMAP_AUTH": "oauth2",
        **generic_oauth(oauth_server),
    }
    login = subprocess.Popen(
        [sys.executable, "-m", "mailsupport", "auth", "login"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert login.stdout is not None
        code = login.stdout.readline().rsplit("enter the code ", 1)[1].strip()
        wait_until(lambda: oauth_server.count("urn:ietf:params:oauth:grant-type:device_code"),
                   "a first poll of the token endpoint")  # fmt: skip
        oauth_server.deny(code, user=oauth_server.app_user)
        _, err = login.communicate(timeout=WAIT)
    finally:
        if login.poll() is None:
            login.kill()
    assert login.returncode == 2
    assert "sign-in for support@example.com was declined" in err
    assert err.count("\n") == 1
