"""A security mode that does not match the port is a configuration error with a hint (exit 2),
not "unreachable" (exit 75, retried forever).

Real servers on loopback: Dovecot and pymap for plain IMAP, aiosmtpd for plain SMTP and for
implicit-TLS SMTP. Implicit-TLS IMAP is a small TLS relay in front of a real plain server, as
stunnel would be; the same relay, without TLS but with a pause, plays a slow server.
"""

from __future__ import annotations

import logging
import select
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from typer.testing import CliRunner

from mailsupport import tlsprobe
from mailsupport.cli import app
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, TemporaryError
from mailsupport.imapconn import connect
from mailsupport.outbox.delivery import deliver_due
from mailsupport.outbox.smtp import check_smtp
from mailsupport.store.db import Store
from tests.support.imapservers import ImapServer
from tests.support.mailboxes import imap_env, imap_settings
from tests.support.outbox import T0, at, get, new_ticket, queue
from tests.support.smtpserver import SmtpServer, free_port, self_signed_cert

PLAIN_IMAP = "the server speaks plain IMAP on this port: use starttls or none"
PLAIN_SMTP = "the server speaks plain SMTP on this port: use starttls or none"
TLS_PORT = "the server speaks TLS on this port"
QUICK = 2.0  # seconds: a mismatch is reported well within this (never the 60 s timeout)


# -- servers ----------------------------------------------------------------------------------


class Relay:
    """A port in front of a real server: implicit TLS when given a context (as stunnel does),
    and/or a pause before connecting through, so that the greeting comes late. A client that
    says nothing for `hangup` seconds (no TLS handshake) is hung up on."""

    def __init__(
        self,
        backend: tuple[str, int],
        tls: ssl.SSLContext | None = None,
        delay: float = 0.0,
        hangup: float = 5.0,
    ) -> None:
        self.backend, self.tls, self.delay, self.hangup = backend, tls, delay, hangup
        self.accepted = 0  # connections taken: ours, and any probe
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(self.hangup)
        try:
            front = self.tls.wrap_socket(conn, server_side=True) if self.tls else conn
            if self._stop.wait(self.delay):  # the test is over
                conn.close()
                return
            back = socket.create_connection(self.backend, timeout=5)
        except OSError:  # a probe that only wanted the handshake, or went away
            conn.close()
            return
        with front, back:
            while not self._stop.is_set():
                pending = isinstance(front, ssl.SSLSocket) and front.pending()
                ready = [front] if pending else select.select([front, back], [], [], 0.05)[0]
                for sock in ready:
                    try:
                        data = sock.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    except OSError:
                        return
                    if not data:
                        return
                    (back if sock is front else front).sendall(data)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    return self_signed_cert(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def server_tls(cert: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*cert)
    return context


@pytest.fixture
def trusted(cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients trust the test certificate, as an installed CA would be."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))


@pytest.fixture
def imaps(imap_server: ImapServer, server_tls: ssl.SSLContext) -> Iterator[Relay]:
    """IMAP with TLS from the first byte, like port 993."""
    with Relay((imap_server.host, imap_server.port), tls=server_tls) as relay:
        yield relay


@pytest.fixture
def smtps(server_tls: ssl.SSLContext) -> Iterator[int]:
    """SMTP with TLS from the first byte, like port 465: aiosmtpd's own implicit TLS."""
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=free_port(), ssl_context=server_tls, ready_timeout=5
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe a silent server after 0.3 s instead of 10 s: loopback servers greet in ms."""
    monkeypatch.setattr(tlsprobe, "GREETING_PATIENCE_SECONDS", 0.3)


def imap_at(settings: Settings, server: ImapServer, port: int, security: str) -> Settings:
    """The default 60 s timeout: a test that finishes in a second did not wait for it."""
    return imap_settings(settings, server, imap_port=port, imap_security=security, imap_timeout=60)


def smtp_at(settings: Settings, port: int, security: str) -> Settings:
    return settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": security,
                "smtp_timeout": 60}
    )  # fmt: skip


def config_error(call: Callable[[Settings], object], s: Settings) -> tuple[ConfigError, float]:
    """The ConfigError `call(s)` raises, and how long that took."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        call(s)
    return info.value, time.monotonic() - started


# -- IMAP -------------------------------------------------------------------------------------


def test_imap_ssl_on_a_plain_port(imap_server: ImapServer, settings: Settings) -> None:
    s = imap_at(settings, imap_server, imap_server.port, "ssl")
    error, took = config_error(connect, s)
    text = str(error)
    assert error.exit_code == 2
    assert text.startswith(f"IMAP server 127.0.0.1:{imap_server.port}: ")
    assert PLAIN_IMAP in text
    assert "MAILSUPPORT_IMAP_SECURITY" in text and "MAILSUPPORT_IMAP_PORT" in text
    assert 'it greeted "* OK' in text
    assert took < QUICK


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_imap_plain_modes_on_a_tls_port(
    imap_server: ImapServer, imaps: Relay, settings: Settings, patient: None, security: str
) -> None:
    error, took = config_error(connect, imap_at(settings, imap_server, imaps.port, security))
    text = str(error)
    assert error.exit_code == 2
    assert text.startswith(f"IMAP server 127.0.0.1:{imaps.port}: ")
    assert f"{TLS_PORT} and waits for our TLS handshake instead of greeting: use ssl" in text
    assert f"MAILSUPPORT_IMAP_SECURITY={security}" in text and "MAILSUPPORT_IMAP_PORT" in text
    assert took < QUICK


def test_imap_ssl_on_a_port_of_another_protocol(
    pymap_server: ImapServer, smtp_server: SmtpServer, settings: Settings
) -> None:
    error, _ = config_error(connect, imap_at(settings, pymap_server, smtp_server.port, "ssl"))
    assert "speaks plain SMTP, not IMAP, on this port: check MAILSUPPORT_IMAP_PORT" in str(error)


def test_imap_matching_modes_connect_without_a_probe(
    imap_server: ImapServer, imaps: Relay, settings: Settings, trusted: None
) -> None:
    with connect(imap_at(settings, imap_server, imaps.port, "ssl")) as client:
        client.select_folder("INBOX")
    assert imaps.accepted == 1
    with (
        Relay((imap_server.host, imap_server.port)) as plain,
        connect(imap_at(settings, imap_server, plain.port, "none")) as client,
    ):
        client.select_folder("INBOX")
    assert plain.accepted == 1


@pytest.mark.slow
def test_a_slow_imap_greeting_is_probed_and_still_waited_for(
    pymap_server: ImapServer, settings: Settings, patient: None
) -> None:
    # Greeting after 0.8 s, probe at 0.3 s: the probe hears plain text (not TLS), and the
    # first connection goes on waiting for its greeting, up to the timeout as before.
    with Relay((pymap_server.host, pymap_server.port), delay=0.8) as slow:
        with connect(imap_at(settings, pymap_server, slow.port, "none")) as client:
            client.select_folder("INBOX")
        assert slow.accepted == 2  # ours, and one probe


# -- SMTP -------------------------------------------------------------------------------------


def test_smtp_ssl_on_a_plain_port(
    smtp_server: SmtpServer, settings: Settings, store: Store
) -> None:
    s = smtp_at(settings, smtp_server.port, "ssl")
    error, took = config_error(check_smtp, s)
    text = str(error)
    assert error.exit_code == 2
    assert text.startswith(f"SMTP server 127.0.0.1:{smtp_server.port}: ")
    assert PLAIN_SMTP in text
    assert "MAILSUPPORT_SMTP_SECURITY" in text and "MAILSUPPORT_SMTP_PORT" in text
    assert took < QUICK

    # Delivery keeps the mail queued, unattempted, with the hint as its last error.
    item_id = queue(store, new_ticket(store), "mismatch@example.com")
    with pytest.raises(ConfigError, match=PLAIN_SMTP):
        deliver_due(store, s, at(T0))
    item = get(store, item_id)
    assert (item.status, item.attempts, item.claimed_until) == ("queued", 0, None)
    assert PLAIN_SMTP in item.last_error
    assert smtp_server.arrivals == []


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_smtp_plain_modes_on_a_tls_port(
    smtps: int, settings: Settings, patient: None, security: str
) -> None:
    s = smtp_at(settings, smtps, security)
    error, took = config_error(check_smtp, s)
    text = str(error)
    assert error.exit_code == 2
    assert text.startswith(f"SMTP server 127.0.0.1:{smtps}: ")
    assert f"{TLS_PORT} and waits for our TLS handshake instead of greeting: use ssl" in text
    assert f"MAILSUPPORT_SMTP_SECURITY={security}" in text and "MAILSUPPORT_SMTP_PORT" in text
    assert took < QUICK


@pytest.mark.slow
def test_a_tls_port_that_hangs_up_on_a_silent_client(
    pymap_server: ImapServer,
    smtp_server: SmtpServer,
    server_tls: ssl.SSLContext,
    settings: Settings,
) -> None:
    # It hangs up long before the 10 s patience is up: the probe runs then, at once.
    with Relay((pymap_server.host, pymap_server.port), tls=server_tls, hangup=0.3) as imaps:
        error, took = config_error(connect, imap_at(settings, pymap_server, imaps.port, "none"))
        assert f"{TLS_PORT} and waits for our TLS handshake" in str(error)
        assert took < QUICK
    with Relay((smtp_server.host, smtp_server.port), tls=server_tls, hangup=0.3) as smtps:
        error, took = config_error(check_smtp, smtp_at(settings, smtps.port, "starttls"))
        assert f"{TLS_PORT} and waits for our TLS handshake" in str(error)
        assert took < QUICK


def test_smtp_matching_modes_still_connect(
    smtps: int, smtp_server: SmtpServer, settings: Settings, trusted: None
) -> None:
    assert check_smtp(smtp_at(settings, smtps, "ssl")).startswith("connected to")
    assert check_smtp(smtp_at(settings, smtp_server.port, "none")).startswith("connected to")


@pytest.mark.slow
def test_a_slow_smtp_greeting_is_probed_and_still_waited_for(
    smtp_server: SmtpServer, settings: Settings, patient: None
) -> None:
    with Relay((smtp_server.host, smtp_server.port), delay=0.8) as slow:
        assert check_smtp(smtp_at(settings, slow.port, "none")).startswith("connected to")
        assert slow.accepted == 2  # ours, and one probe


@pytest.mark.slow
@pytest.mark.parametrize("security", ["ssl", "none"])
def test_a_dead_or_silent_server_is_still_temporary(settings: Settings, security: str) -> None:
    # Nothing listens, or a server accepts and never says a word (neither plain nor TLS):
    # still "unreachable" (exit 75) with no hint about TLS, and no later than the timeout.
    refused = free_port()
    with Relay(("127.0.0.1", free_port()), delay=60) as silent:
        for port in (refused, silent.port):
            imap = settings.model_copy(
                update={"imap_host": "127.0.0.1", "imap_port": port, "imap_user": "support",
                        "imap_security": security, "imap_timeout": 1}
            )  # fmt: skip
            smtp = smtp_at(settings, port, security).model_copy(update={"smtp_timeout": 1})
            calls: list[tuple[Callable[[Settings], object], Settings]] = [
                (connect, imap),
                (check_smtp, smtp),
            ]
            for call, s in calls:
                started = time.monotonic()
                with pytest.raises(TemporaryError) as info:
                    call(s)
                assert "TLS" not in str(info.value)
                assert time.monotonic() - started < 2.0, str(info.value)  # not 1 s + a 5 s probe


# -- through the command line -----------------------------------------------------------------


def test_poll_exits_2_with_the_hint(imap_server: ImapServer, env_for_cli: dict[str, str]) -> None:
    env = imap_env(env_for_cli, imap_server, imap_security="ssl")
    result = CliRunner().invoke(app, ["poll"], env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"mailsupport: IMAP server 127.0.0.1:{imap_server.port}: ")
    assert PLAIN_IMAP in result.output


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """`daemon` puts its own handler on the root logger, writing to CliRunner's stream: put
    pytest's back afterwards, or later tests log into a closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.slow
def test_daemon_stops_at_startup_with_exit_2(
    imap_server: ImapServer, imaps: Relay, env_for_cli: dict[str, str], keep_logging: None
) -> None:
    # No patience patched here: a 2 s timeout makes the probe come after 1 s.
    env = imap_env(
        env_for_cli, imap_server, imap_port=str(imaps.port), imap_security="none", imap_timeout="2"
    )
    started = time.monotonic()
    result = CliRunner().invoke(app, ["daemon"], env=env)
    assert result.exit_code == 2, result.output
    assert f"{TLS_PORT} and waits for our TLS handshake instead of greeting: use ssl" in (
        result.output
    )
    assert time.monotonic() - started < 1 + QUICK


def test_doctor_fails_the_smtp_check_with_the_hint(
    smtps: int, env_for_cli: dict[str, str], patient: None
) -> None:
    env = {**env_for_cli, "MAILSUPPORT_SMTP_HOST": "127.0.0.1", "MAILSUPPORT_SMTP_PORT": str(smtps),
           "MAILSUPPORT_SMTP_SECURITY": "starttls"}  # fmt: skip
    result = CliRunner().invoke(app, ["doctor"], env=env)
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("FAIL  SMTP")]
    assert line.startswith(f"FAIL  SMTP: SMTP server 127.0.0.1:{smtps}: ")
    assert f"{TLS_PORT} and waits for our TLS handshake instead of greeting: use ssl" in line
