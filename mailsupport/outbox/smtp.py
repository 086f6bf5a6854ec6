"""SMTP: the one asynchronous corner of the outbox, behind a synchronous connection.

A SmtpConnection sends one queued message to its envelope recipients and answers with a
verdict per recipient: sent, temporary (4xx, no connection, a timeout) or permanent (5xx).
What keeps every message from going out (no host, login refused, an untrusted certificate,
a security mode the port does not speak) is raised as ConfigError instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import aiosmtplib

from mailsupport import tlsprobe
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, MailSupportError, TemporaryError

Verdict = Literal["sent", "temporary", "permanent"]
# recipient -> (verdict, the server's reply or our error)
Results = dict[str, tuple[Verdict, str]]


class ConnectionDown(Exception):
    """No usable connection to the server: every message left in the batch waits."""


def _reply(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


def check_smtp(settings: Settings) -> str:
    """Whether outgoing mail could leave now; raises a one-line MailSupportError if not."""
    if not settings.smtp_host:
        raise ConfigError("MAILSUPPORT_SMTP_HOST is not set: name the server that sends our mail")
    smtp = SmtpConnection(settings)
    try:
        smtp.open()
    except ConnectionDown as error:
        raise TemporaryError(str(error)) from None
    finally:
        smtp.close()
    login = f" as {settings.smtp_user}" if settings.smtp_user else ""
    return f"connected to {smtp.where} ({settings.smtp_security}){login}"


def _verdict(code: int) -> Verdict:
    # 5xx is final (RFC 5321 4.2.1); 4xx, and anything unexpected, may pass with time.
    return "permanent" if 500 <= code < 600 else "temporary"


class SmtpConnection:
    """One SMTP connection reused for a batch, behind a synchronous `send`.

    An asyncio.Runner keeps a single event loop (and so the open connection) alive between
    calls, while the database work in between stays plain synchronous code.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.where = f"{settings.smtp_host}:{settings.smtp_port_or_default}"
        # Connect, greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT..., DATA each wait up to
        # SMTP_TIMEOUT; a whole send is capped at a few of them so a trickling server
        # cannot outlast the claim.
        self.budget = timedelta(seconds=4 * settings.smtp_timeout)
        self._runner: asyncio.Runner | None = None
        self._client: aiosmtplib.SMTP | None = None

    def send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> Results:
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(self._send(mail_from, recipients, data))

    def open(self) -> None:
        """Connect, greet, STARTTLS and log in, as a send would (for `doctor`)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        self._runner.run(self._connection())

    def close(self) -> None:
        if self._runner is None:
            return
        if self._client is not None and self._client.is_connected:
            try:
                self._runner.run(asyncio.wait_for(self._client.quit(), timeout=5))
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._client.close()  # a polite QUIT is optional
        self._runner.close()
        self._runner = None

    async def _send(self, mail_from: str, recipients: Sequence[str], data: bytes) -> Results:
        try:
            async with asyncio.timeout(self.budget.total_seconds()):
                client = await self._connection()
                try:
                    refused, _ = await client.sendmail(mail_from, list(recipients), data)
                except aiosmtplib.SMTPRecipientsRefused as every:
                    refused = {e.recipient: aiosmtplib.SMTPResponse(e.code, e.message)
                               for e in every.recipients}  # fmt: skip
        except aiosmtplib.SMTPResponseException as error:
            if isinstance(error, aiosmtplib.SMTPSenderRefused) and error.code == 530:
                # RFC 4954/3207: "authentication (or STARTTLS) required". Ours to fix, and
                # no fault of this message: raised so that the mail stays queued.
                raise ConfigError(
                    f"the SMTP server {self.where} takes no mail from us as configured: "
                    f"{_reply(error.code, error.message)} (check MAILSUPPORT_SMTP_USER, "
                    "MAILSUPPORT_SMTP_PASSWORD and MAILSUPPORT_SMTP_SECURITY)"
                ) from None
            if error.code == 421 and self._client is not None:
                self._client.close()  # "closing the channel": the next message reconnects
            reply = _reply(error.code, error.message)
            return {r: (_verdict(error.code), reply) for r in recipients}
        except ValueError as error:  # an address aiosmtplib will not put on the wire
            return {r: ("permanent", f"invalid address: {error}") for r in recipients}
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # Dropped, timed out or confused mid-transaction: a new connection next time.
            if self._client is not None:
                self._client.close()
            text = _error_text(error) or "no answer within the time limit"
            return {r: ("temporary", f"connection to {self.where} failed: {text}")
                    for r in recipients}  # fmt: skip
        results: Results = {}
        for rcpt in recipients:
            if rcpt in refused:
                response = refused[rcpt]
                results[rcpt] = (_verdict(response.code), _reply(response.code, response.message))
            else:
                results[rcpt] = ("sent", "")
        return results

    async def _connection(self) -> aiosmtplib.SMTP:
        """The open connection, checked with NOOP, or a new one. Connection trouble raises
        ConnectionDown, configuration trouble ConfigError."""
        if self._client is not None and self._client.is_connected:
            try:
                await self._client.noop()
                return self._client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._client.close()  # the server dropped an idle connection: reconnect
        s = self.settings
        keeper = self._token_keeper()
        password_login = keeper is None and bool(s.smtp_user)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port_or_default,
            use_tls=s.smtp_security == "ssl",
            # "none" means none: no opportunistic STARTTLS that could fail verification.
            start_tls=s.smtp_security == "starttls",
            validate_certs=True,
            timeout=s.smtp_timeout,
            username=s.smtp_user if password_login else None,
            password=s.smtp_password.get_secret_value() if password_login else None,
        )
        try:
            await self._connect(client)
            if keeper is not None:
                await self._oauth_login(client, keeper)
        except aiosmtplib.SMTPAuthenticationError as error:
            if keeper is not None:
                client.close()
                raise ConfigError(
                    f"the SMTP server {self.where} refused the OAuth2 token for "
                    f"{keeper.account.login}: {_reply(error.code, error.message)} (check the "
                    "application's permission to send as this mailbox)"
                ) from None
            raise ConfigError(
                f"SMTP login to {self.where} as {s.smtp_user} failed: "
                f"{_reply(error.code, error.message)} "
                "(check MAILSUPPORT_SMTP_USER and MAILSUPPORT_SMTP_PASSWORD)"
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            mismatch = await self._tls_mismatch(error)
            raise (mismatch or self._connect_error(error)) from None
        self._client = client
        return client

    def _token_keeper(self) -> Any:
        """The OAuth2 token keeper when SMTP signs in with OAuth2, else None."""
        if self.settings.smtp_auth != "oauth2":
            return None
        from mailsupport.oauth.tokens import keeper  # the database layer: only for OAuth2

        return keeper(self.settings, "smtp")

    async def _oauth_login(self, client: aiosmtplib.SMTP, keeper: Any) -> None:
        from mailsupport.oauth.sasl import smtp_login

        try:
            await smtp_login(client, keeper)
        except TemporaryError as error:  # the token server is down: as if the SMTP server were
            client.close()
            raise ConnectionDown(str(error)) from None
        except MailSupportError:  # no token to be had: revoked, refused
            client.close()
            raise

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        """client.connect(). A plain-text connection (none, starttls) still not through after
        tlsprobe.patience() may be waiting for a greeting that never comes, from a port that
        speaks TLS: a probe asks while the connection keeps waiting (see tlsprobe)."""
        s = self.settings
        if s.smtp_security == "ssl":  # a plain-text port fails the handshake at once
            await client.connect()
            return
        connecting = asyncio.ensure_future(client.connect())
        try:
            await asyncio.wait({connecting}, timeout=tlsprobe.patience(s.smtp_timeout))
            if not connecting.done() and await asyncio.to_thread(
                tlsprobe.speaks_tls,
                s.smtp_host,
                s.smtp_port_or_default,
                tlsprobe.probe_seconds(s.smtp_timeout),
            ):
                raise tlsprobe.tls_port_error("SMTP", self.where, s.smtp_security)
            await connecting
        finally:
            if not connecting.done():  # given up on, or we are being cancelled
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting  # aiosmtplib closes the half-open connection

    async def _tls_mismatch(self, error: BaseException) -> ConfigError | None:
        """The configuration error behind a failed connection when the port speaks the other
        way than MAILSUPPORT_SMTP_SECURITY says, found by a short probe; else None."""
        s = self.settings
        host, port = s.smtp_host, s.smtp_port_or_default
        seconds = min(tlsprobe.PROBE_SECONDS, s.smtp_timeout)
        if s.smtp_security == "ssl":
            if not tlsprobe.broke_handshake(error):
                return None
            greeting = await asyncio.to_thread(tlsprobe.plain_greeting, host, port, seconds)
            if greeting is None:  # not plain text either: the network's fault after all
                return None
            return tlsprobe.plain_port_error("SMTP", self.where, greeting)
        # Hung up before greeting: a TLS port may do that to a client that says nothing.
        hung_up = isinstance(error, aiosmtplib.SMTPConnectError) and isinstance(
            error.__cause__, aiosmtplib.SMTPServerDisconnected
        )
        if hung_up and await asyncio.to_thread(tlsprobe.speaks_tls, host, port, seconds):
            return tlsprobe.tls_port_error("SMTP", self.where, s.smtp_security)
        return None

    def _connect_error(self, error: BaseException) -> Exception:
        text = _error_text(error)
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return ConfigError(
                    f"the certificate of the SMTP server {self.where} is not trusted: "
                    f"{cause.verify_message} (check MAILSUPPORT_SMTP_HOST, or install the "
                    "server's certificate authority on this host)"
                )
            cause = cause.__cause__ or cause.__context__
        if "STARTTLS extension not supported" in text:
            return ConfigError(
                f"the SMTP server {self.where} does not offer STARTTLS "
                "(check MAILSUPPORT_SMTP_SECURITY and MAILSUPPORT_SMTP_PORT)"
            )
        if "AUTH extension is not supported" in text:
            return ConfigError(
                f"the SMTP server {self.where} offers no login here "
                "(check MAILSUPPORT_SMTP_SECURITY, or leave MAILSUPPORT_SMTP_USER empty)"
            )
        return ConnectionDown(f"cannot connect to {self.where}: {text or 'timed out'}")


def _error_text(error: BaseException) -> str:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _reply(error.code, error.message)
    return " ".join(str(error).split())
