"""A real SMTP server on loopback for the tests: aiosmtpd's Controller in a thread.

    from tests.support.smtpserver import SmtpServer  # the fixture is registered by conftest.py

    def test_send(smtp_server: SmtpServer) -> None:
        smtp_server.refuse_rcpt("550 5.1.1 no such user", only=["bob@example.org"])
        ...  # deliver to smtp_server.host, smtp_server.port
        [arrival] = smtp_server.arrivals  # envelope and the exact bytes of what arrived

What the server does is set per test, and can be changed between deliveries:
- `accept()`: take everything (the default; also clears the other settings).
- `refuse_rcpt(reply, only=None)`: answer RCPT with `reply` ("450 ..." or "550 ..."), for
  every recipient or only the listed ones.
- `refuse_each({address: reply, ...})`: a reply of its own for each of these recipients.
- `refuse_data(reply)`: answer the end of DATA with `reply`.
- `drop_at("rcpt" | "data", only=None)`: close the connection at that point without an
  answer (at "data" after the whole message was received; it is not recorded as arrived);
  with `only`, just for messages to those recipients.
- `hold_data(only=None, accepted=False)`: at the end of DATA, never answer (the sender
  waits until it gives up or dies); `held` is set when that happens. With `accepted`, the
  message is recorded as arrived first, as a real server that has queued it but whose
  "250" never reached the sender.
- `stop()` / `start()`: the server goes away (connection refused) and comes back on the
  same port.
- `offer_login(user, password)`: AUTH is offered (over plain SMTP); wrong credentials get
  535. Takes effect on the next start().

- `offer_oauth(validate)`: AUTH XOAUTH2 and OAUTHBEARER are offered (only those, over plain
  SMTP) and required before MAIL (530 otherwise). `validate(user, token) -> bool` decides,
  e.g. `lambda u, t: oauth_server.valid(t) == u`; a refused token first gets the usual
  base64 JSON error challenge (334), and 535 after the client's answer to it. Every attempt
  is recorded in `auth_log` as (user, mechanism, ok). Takes effect on the next start().

- `offer_starttls(cert, key)`: STARTTLS with that certificate, required before MAIL.
  `self_signed_cert(directory)` makes one for 127.0.0.1.

It speaks plain SMTP unless told otherwise. Startup takes a few milliseconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class Arrival:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # the message as received, dot-unstuffed, CRLF line ends
    peer: tuple[str, int]  # the client's address: one connection, one peer port


class AuthAttempt(NamedTuple):
    user: str
    mechanism: str  # "XOAUTH2" or "OAUTHBEARER"
    ok: bool


@dataclass
class _Behaviour:
    rcpt_reply: str | None = None
    rcpt_only: frozenset[str] | None = None  # lowercased; None: every recipient
    rcpt_each: dict[str, str] = field(default_factory=dict)  # lowercased address -> reply
    data_reply: str | None = None
    drop: str | None = None  # "rcpt" or "data"
    hold: bool = False  # never answer the end of DATA
    hold_accepted: bool = False  # ... but record the message as arrived first


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        rule = self.server.behaviour
        applies = rule.rcpt_only is None or address.lower() in rule.rcpt_only
        if rule.drop == "rcpt" and applies:
            return self._drop(smtp)
        if rule.rcpt_reply and applies:
            return rule.rcpt_reply
        if address.lower() in rule.rcpt_each:
            return rule.rcpt_each[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        rule = self.server.behaviour
        named = {a.lower() for a in envelope.rcpt_tos}
        if rule.drop == "data" and (rule.rcpt_only is None or named & rule.rcpt_only):
            return self._drop(smtp)
        if rule.data_reply:
            return rule.data_reply
        holding = rule.hold and (rule.rcpt_only is None or bool(named & rule.rcpt_only))
        if holding and not rule.hold_accepted:
            self.server.held.set()
            await asyncio.sleep(3600)
        with self.server.lock:
            self.server.arrivals.append(
                Arrival(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=envelope.original_content or b"",
                    peer=tuple(session.peer[:2]),
                )
            )
        if holding:
            self.server.held.set()
            await asyncio.sleep(3600)
        return "250 Message accepted for delivery"

    @staticmethod
    def _drop(smtp: SMTP) -> str:
        assert smtp.transport is not None
        smtp.transport.abort()  # no answer, no QUIT: as when a server or a link dies
        return "421 closing"  # written to the closed transport, so never seen


class _OAuthHandler(_Handler):
    """The same delivery behaviour, behind AUTH XOAUTH2 / OAUTHBEARER (aiosmtpd finds mechanisms
    by their `auth_<NAME>` methods on the handler)."""

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        # aiosmtpd's own auth_required also works, but warns on every connection without TLS.
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        # base64("user=" USER ^A "auth=Bearer " TOKEN ^A ^A), as Gmail and Outlook take it.
        raw = await self._initial_response(smtp, args)
        if raw is None:
            return AuthResult(success=False, handled=True)
        fields = _sasl_fields(raw.split(b"\x01"))
        return await self._check(smtp, "XOAUTH2", fields.get("user", ""), fields)

    async def auth_OAUTHBEARER(self, smtp: SMTP, args: list[str]) -> AuthResult:
        # RFC 7628: a GS2 header "n,a=USER," then ^A-separated key=value pairs, ^A ^A.
        raw = await self._initial_response(smtp, args)
        if raw is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = raw.partition(b"\x01")
        user = ""
        for part in gs2.decode(errors="replace").split(","):
            if part.startswith("a="):
                user = part[2:].replace("=2C", ",").replace("=3D", "=")
        return await self._check(smtp, "OAUTHBEARER", user, _sasl_fields(rest.split(b"\x01")))

    async def _initial_response(self, smtp: SMTP, args: list[str]) -> bytes | None:
        if len(args) < 2:  # no initial response on the AUTH line: ask for it
            answer = await smtp.challenge_auth("")
            return answer if isinstance(answer, bytes) else None  # None: aborted with "*"
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await smtp.push("501 5.5.2 Can't decode base64")
            return None

    async def _check(
        self, smtp: SMTP, mechanism: str, user: str, fields: dict[str, str]
    ) -> AuthResult:
        bearer = fields.get("auth", "")
        token = bearer[7:] if bearer.lower().startswith("bearer ") else ""
        validate = self.server.oauth
        ok = bool(user and token and validate is not None and validate(user, token))
        with self.server.lock:
            self.server.auth_log.append(AuthAttempt(user, mechanism, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        # Both mechanisms answer a bad token with a JSON error in a 334 challenge; the client
        # replies (XOAUTH2: an empty line, OAUTHBEARER: ^A) and only then gets the failure.
        error = {"status": "invalid_token" if mechanism == "OAUTHBEARER" else "401",
                 "schemes": "Bearer", "scope": "https://mail.example.com/"}  # fmt: skip
        answer = await smtp.challenge_auth(json.dumps(error))
        if answer is MISSING:  # the client aborted with "*" and was told so
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and token not accepted"
        )


def _sasl_fields(parts: list[bytes]) -> dict[str, str]:
    fields = {}
    for part in parts:
        key, sep, value = part.decode(errors="replace").partition("=")
        if sep:
            fields[key] = value
    return fields


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 and localhost, made with the openssl command."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    arrivals: list[Arrival] = field(default_factory=list)
    behaviour: _Behaviour = field(default_factory=_Behaviour)
    login: tuple[str, str] | None = None
    oauth: Callable[[str, str], bool] | None = None  # validate(user, token)
    oauth_mechanisms: set[str] = field(default_factory=lambda: {"XOAUTH2", "OAUTHBEARER"})
    auth_log: list[AuthAttempt] = field(default_factory=list)
    tls: ssl.SSLContext | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: threading.Event = field(default_factory=threading.Event)
    _controller: Controller | None = None

    # -- behaviour --------------------------------------------------------------------------

    def accept(self) -> None:
        self.behaviour = _Behaviour()

    def refuse_rcpt(self, reply: str, only: Iterable[str] | None = None) -> None:
        wanted = None if only is None else frozenset(a.lower() for a in only)
        self.behaviour = _Behaviour(rcpt_reply=reply, rcpt_only=wanted)

    def refuse_each(self, replies: dict[str, str]) -> None:
        """A reply of its own at RCPT for each of these recipients; others are accepted."""
        self.behaviour = _Behaviour(rcpt_each={a.lower(): r for a, r in replies.items()})

    def refuse_data(self, reply: str) -> None:
        self.behaviour = _Behaviour(data_reply=reply)

    def drop_at(self, stage: str, only: Iterable[str] | None = None) -> None:
        assert stage in ("rcpt", "data")
        wanted = None if only is None else frozenset(a.lower() for a in only)
        self.behaviour = _Behaviour(drop=stage, rcpt_only=wanted)

    def hold_data(self, only: Iterable[str] | None = None, accepted: bool = False) -> None:
        wanted = None if only is None else frozenset(a.lower() for a in only)
        self.held.clear()
        self.behaviour = _Behaviour(hold=True, hold_accepted=accepted, rcpt_only=wanted)

    def offer_login(self, user: str, password: str) -> None:
        """Takes effect on the next start(); call before the server starts or restart it."""
        self.login = (user, password)

    def offer_oauth(
        self,
        validate: Callable[[str, str], bool],
        mechanisms: Iterable[str] = ("XOAUTH2", "OAUTHBEARER"),
    ) -> None:
        """AUTH XOAUTH2 and OAUTHBEARER only (or just those of `mechanisms`), required before
        MAIL; `validate(user, token)` says whether a token is good for that user. Takes
        effect on the next start()."""
        self.oauth = validate
        self.oauth_mechanisms = {m.upper() for m in mechanisms}

    # -- running ----------------------------------------------------------------------------

    def start(self) -> None:
        assert self._controller is None, "already running"
        kwargs: dict[str, Any] = {}
        handler = _Handler(self)
        if self.oauth is not None:
            handler = _OAuthHandler(self)
            left_out = {"XOAUTH2", "OAUTHBEARER"} - self.oauth_mechanisms
            kwargs.update(
                auth_require_tls=False, auth_exclude_mechanism=["PLAIN", "LOGIN", *left_out]
            )
        elif self.login is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        if self.tls is not None:
            kwargs.update(tls_context=self.tls, require_starttls=True)
        self._controller = Controller(
            handler, hostname=self.host, port=self.port, ready_timeout=5, **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def offer_starttls(self, cert_file: Path, key_file: Path) -> None:
        """STARTTLS with this certificate, required before MAIL. Takes effect on start()."""
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(cert_file, key_file)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and self.login is not None
            and (data.login.decode(), data.password.decode()) == self.login
        )
        return AuthResult(success=ok, handled=False)

    def count(self, message_id: str) -> int:
        """How many times a message with this Message-ID (no brackets) arrived."""
        needle = f"<{message_id}>".encode()
        return sum(1 for a in self.arrivals if needle in a.data.split(b"\r\n\r\n", 1)[0])


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
