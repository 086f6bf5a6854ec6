"""The IMAP connection, below intake and delivery alike: signing in, folders, and what a
network failure means.

`connect` turns every failure into one clear MailSupportError (ConfigError for what a person
must fix, TemporaryError for what passes); `server_errors` does the same for failures during
work on a connection. The intake source (sources/imap.py) and the outbox's Sent copies
(outbox/sentcopies.py) both use it; neither imports the other.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imap4 import IMAP4WithTimeout

from mailsupport import tlsprobe
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, MailSupportError, TemporaryError

log = logging.getLogger(__name__)

# Errors that mean "the server or the network let us down; try again later".
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes socket.timeout, ConnectionError, ssl.SSLError
    imaplib.IMAP4.abort,
    EOFError,
)


def connect(settings: Settings) -> IMAPClient:
    """A logged-in IMAPClient; every failure becomes one clear MailSupportError."""
    if not settings.imap_host:
        raise ConfigError("MAILSUPPORT_IMAP_HOST is not set: name the support mailbox's server")
    if not settings.imap_user:
        raise ConfigError("MAILSUPPORT_IMAP_USER is not set: name the support mailbox's login")
    keeper = _token_keeper(settings)  # a mistake in the OAuth2 settings stops us first
    token = keeper.access_token() if keeper is not None else ""  # so does a revoked sign-in
    host, port = settings.imap_host, settings.imap_port_or_default
    context = ssl.create_default_context() if settings.imap_security != "none" else None
    where = f"{host}:{port}"

    def check_not_tls() -> None:  # the server is silent: is it waiting for a TLS handshake?
        if tlsprobe.speaks_tls(host, port, tlsprobe.probe_seconds(settings.imap_timeout)):
            raise tlsprobe.tls_port_error("IMAP", where, settings.imap_security)

    try:
        client = _Client(
            host,
            port=port,
            ssl=settings.imap_security == "ssl",
            ssl_context=context,
            timeout=settings.imap_timeout,
            on_silence=check_not_tls,
        )
    except ssl.SSLCertVerificationError as error:
        raise _untrusted(where, error) from None
    except socket.gaierror as error:
        raise TemporaryError(
            f"IMAP server {where}: cannot resolve the host ({error.strerror})"
        ) from None
    except NETWORK_ERRORS as error:
        if settings.imap_security == "ssl" and tlsprobe.broke_handshake(error):
            greeting = tlsprobe.plain_greeting(
                host, port, min(tlsprobe.PROBE_SECONDS, settings.imap_timeout)
            )
            if greeting is not None:
                raise tlsprobe.plain_port_error("IMAP", where, greeting) from None
        raise TemporaryError(f"IMAP server {where} unreachable: {reason(error)}") from None
    except imaplib.IMAP4.error as error:  # e.g. a "* BYE Too many connections" greeting
        raise TemporaryError(f"IMAP server {where} turned us away: {reason(error)}") from None
    try:
        if settings.imap_security == "starttls":
            client.starttls(context)
        if keeper is None:
            client.login(settings.imap_user, settings.imap_password.get_secret_value())
        else:
            from mailsupport.oauth.sasl import imap_login

            imap_login(client, keeper, token)
    except LoginError as error:
        close_quietly(client)
        text = reason(error)
        if "UNAVAILABLE" in text.upper() or "TRY AGAIN" in text.upper():
            raise TemporaryError(f"IMAP login to {where} refused for now: {text}") from None
        if keeper is not None:
            raise ConfigError(
                f"IMAP server {where} refused the OAuth2 token for {settings.imap_user}: "
                f"{text} (check the application's access to this mailbox)"
            ) from None
        raise ConfigError(
            f"IMAP login to {where} as {settings.imap_user} failed: {text} "
            "(check MAILSUPPORT_IMAP_USER and MAILSUPPORT_IMAP_PASSWORD)"
        ) from None
    except MailSupportError:  # the token could not be had (revoked, server down)
        close_quietly(client)
        raise
    except ssl.SSLCertVerificationError as error:
        close_quietly(client)
        raise _untrusted(where, error) from None
    except NETWORK_ERRORS as error:
        close_quietly(client)
        raise TemporaryError(
            f"IMAP server {where} dropped the connection: {reason(error)}"
        ) from None
    except IMAPClientError as error:
        close_quietly(client)
        raise ConfigError(f"IMAP server {where}: {reason(error)}") from None
    return client


def _token_keeper(settings: Settings) -> Any:
    """The OAuth2 token keeper when IMAP signs in with OAuth2, else None."""
    if settings.imap_auth != "oauth2":
        return None
    from mailsupport.oauth.tokens import keeper  # loads the database layer: only for OAuth2

    return keeper(settings, "imap")


class _Client(IMAPClient):
    """IMAPClient whose plain-text connections (none, starttls) notice a silent server: a port
    that speaks TLS from the first byte waits for our handshake and never greets, which would
    otherwise look like a timeout after MAILSUPPORT_IMAP_TIMEOUT. See mailsupport.tlsprobe."""

    def __init__(self, *args: Any, on_silence: Callable[[], None], **kwargs: Any) -> None:
        self._on_silence = on_silence  # before IMAPClient.__init__, which connects
        super().__init__(*args, **kwargs)

    def _create_IMAP4(self) -> imaplib.IMAP4:  # imapclient's seam for making the connection
        if self.ssl or self.stream:
            return super()._create_IMAP4()
        return _PlainIMAP4(self.host, self.port, self._timeout.connect, self._on_silence)


class _PlainIMAP4(IMAP4WithTimeout):
    """imaplib reads the greeting right after _create_socket: wait for it there first."""

    def __init__(
        self, host: str, port: int, timeout: float, on_silence: Callable[[], None]
    ) -> None:
        self._on_silence = on_silence
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = super()._create_socket(timeout)
        try:
            tlsprobe.wait_for_greeting(sock, self._timeout, self._on_silence)
        except BaseException:
            sock.close()
            raise
        return sock


def ensure_folder(client: IMAPClient, name: str) -> None:
    """Create folder `name` on the server unless it exists."""
    if not client.folder_exists(name):
        client.create_folder(name)
        log.info("created IMAP folder %s", name)


def _untrusted(where: str, error: ssl.SSLCertVerificationError) -> ConfigError:
    return ConfigError(
        f"IMAP server {where}: certificate not trusted ({error.verify_message}); "
        "fix the certificate, or set MAILSUPPORT_IMAP_SECURITY=none only on a trusted network"
    )


def reason(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, bytes):
        text = error.decode("utf-8", "replace")
    text = text.removeprefix("b'").removesuffix("'")
    return " ".join(text.split()) or type(error).__name__


def close_quietly(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):  # closing after a failure: nothing more to say
        client.shutdown()


class server_errors:
    """Network failures during a pass become TemporaryError (exit 75)."""

    def __init__(self, settings: Settings) -> None:
        self.where = f"{settings.imap_host}:{settings.imap_port_or_default}"

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: BaseException | None, _tb: Any) -> bool:
        if error is None or isinstance(error, MailSupportError):
            return False
        if isinstance(error, NETWORK_ERRORS):
            raise TemporaryError(
                f"IMAP server {self.where} dropped the connection: {reason(error)}"
            ) from error
        if isinstance(error, IMAPClientError):
            raise TemporaryError(f"IMAP server {self.where} failed: {reason(error)}") from error
        return False


def disconnect(client: IMAPClient) -> None:
    """Log out and close; a dead connection has nothing more to say."""
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()
