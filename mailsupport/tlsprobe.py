"""Does a port speak TLS from its first byte, or plain text? A short look, for error messages.

MAILSUPPORT_IMAP_SECURITY and MAILSUPPORT_SMTP_SECURITY must match the port: "ssl" wants TLS
from the first byte (993, 465), "starttls" and "none" a plain-text greeting (143, 587, 25). A
mismatch looks like a network failure from inside the client (a TLS handshake that reads
"* OK", or a greeting that never comes because the server waits for our TLS handshake), and
would be reported as "unreachable" and retried forever. The IMAP source and the outbox call in
here only when a connection failed, or stayed silent past GREETING_PATIENCE_SECONDS, to turn
that into the configuration error it is. The normal path never probes.

Each probe is one extra connection with its own short deadline, and sends at most a TLS
ClientHello. Certificates are not checked: the only question is "is it TLS?".
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable

from mailsupport.errors import ConfigError

# A plain-text server greets at once. One that stays silent this long (or half the
# configured timeout, if that is shorter) may be waiting for our TLS handshake: then a probe
# asks, on a second connection, while the first keeps waiting. Postfix's postscreen pauses up
# to 6 s before its final greeting and ident lookups used to take 5 s: 10 s stays clear of
# such slow-but-legitimate servers, and they only ever cost one extra probe connection.
GREETING_PATIENCE_SECONDS = 10.0
PROBE_SECONDS = 5.0  # one probe, all of it: connect, ClientHello, the first answer
GREETING_MAX_BYTES = 512
SHOWN_CHARS = 80  # of a greeting quoted in an error message

_USUAL_PORT = {
    "IMAP": {"ssl": "993", "starttls": "143", "none": "143"},
    "SMTP": {"ssl": "465", "starttls": "587", "none": "587 or 25"},
}


def patience(timeout: float) -> float:
    """How long a plain-text greeting may be awaited before probing: always less than the
    timeout, so that the probe comes before the client gives up."""
    return min(GREETING_PATIENCE_SECONDS, timeout / 2)


def probe_seconds(timeout: float) -> float:
    """How long that probe may take: it ends within the timeout too, so a server that is
    merely silent still fails after the configured timeout, as before."""
    return min(PROBE_SECONDS, timeout - patience(timeout))


def wait_for_greeting(sock: socket.socket, timeout: float, on_silence: Callable[[], None]) -> None:
    """Wait on a freshly connected plain-text socket until the server says something (left
    unread for the client) or hangs up. If it is silent for patience(timeout), or hangs up
    without a word, call on_silence() once (it may raise); the greeting read that follows
    then gets what is left of `timeout`, so a slow but legitimate server is waited for
    exactly as long as before."""
    started = time.monotonic()
    previous = sock.gettimeout()
    sock.settimeout(patience(timeout))
    try:
        first = sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        first = None
    finally:
        sock.settimeout(previous)
    if first:
        return
    on_silence()
    if first is None:  # silent, not closed: the greeting read may use the rest of the time
        sock.settimeout(max(timeout - (time.monotonic() - started), 0.01))


def speaks_tls(host: str, port: int, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the port answers a TLS ClientHello with a TLS record (a handshake, or an alert:
    both prove TLS). False when it greets in plain text, stays silent, or cannot be reached."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            deadline = time.monotonic() + timeout
            sock.sendall(_client_hello(host))
            head = _read(sock, deadline, lambda data: len(data) >= 3)
    except (OSError, ValueError):  # ValueError: a host name the ssl module cannot encode
        return False
    return _is_tls_record(head)


def plain_greeting(host: str, port: int, timeout: float = PROBE_SECONDS) -> str | None:
    """The first line the port sends unprompted, cleaned for a terminal; None when it sends
    nothing (as a TLS port does, waiting for the client), or cannot be reached."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            deadline = time.monotonic() + timeout
            data = _read(sock, deadline, lambda data: b"\n" in data)
    except OSError:
        return None
    if not data or _is_tls_record(data):
        return None
    return _clean(data.split(b"\n", 1)[0])


def broke_handshake(error: BaseException) -> bool:
    """Whether a failed TLS connection died in the handshake in a way a plain-text server
    causes: the bytes read were not TLS, or the server hung up on our ClientHello. (An
    untrusted certificate, a refused connection or a timeout are other stories.)"""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return False
        if isinstance(cause, ssl.SSLError | ConnectionResetError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def protocol_of(greeting: str) -> str:
    """Which protocol a plain-text greeting belongs to: "IMAP", "SMTP", "POP3" or ""."""
    upper = greeting.upper()
    if upper.startswith(("* OK", "* PREAUTH", "* BYE")):
        return "IMAP"
    if re.match(r"\d{3}(?:[ -]|$)", greeting):
        return "SMTP"
    if upper.startswith(("+OK", "-ERR")):
        return "POP3"
    return ""


def plain_port_error(protocol: str, where: str, greeting: str) -> ConfigError:
    """security=ssl against a port that greets in plain text."""
    security, port = f"MAILSUPPORT_{protocol}_SECURITY", f"MAILSUPPORT_{protocol}_PORT"
    tls_port = _USUAL_PORT[protocol]["ssl"]
    shown = greeting if len(greeting) <= SHOWN_CHARS else greeting[: SHOWN_CHARS - 3] + "..."
    spoken = protocol_of(greeting)
    if spoken and spoken != protocol:  # the wrong port altogether, whatever the security
        hint = (
            f"the server speaks plain {spoken}, not {protocol}, on this port: "
            f"check {port}; {protocol} with ssl is usually on port {tls_port}"
        )
    else:
        what = f"plain {protocol}" if spoken else "plain text, not TLS,"
        hint = (
            f"the server speaks {what} on this port: use starttls or none ({security}="
            "starttls encrypts after the greeting; none only on a trusted network), or set "
            f"{port} to the server's TLS port, usually {tls_port}"
        )
    return ConfigError(
        f'{protocol} server {where}: {security}=ssl, but {hint} (it greeted "{shown}")'
    )


def tls_port_error(protocol: str, where: str, mode: str) -> ConfigError:
    """security=none or starttls against a port that speaks TLS from the first byte."""
    security, port = f"MAILSUPPORT_{protocol}_SECURITY", f"MAILSUPPORT_{protocol}_PORT"
    return ConfigError(
        f"{protocol} server {where}: {security}={mode}, but the server speaks TLS on this port "
        f"and waits for our TLS handshake instead of greeting: use ssl ({security}=ssl), or "
        f"set {port} to the server's {'plain' if mode == 'none' else 'STARTTLS'} port, "
        f"usually {_USUAL_PORT[protocol][mode]}"
    )


def _client_hello(host: str) -> bytes:
    """The bytes a TLS client opens with, made by the ssl module without a socket."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the probe asks "is it TLS?" and trusts no answer
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=host)
    with contextlib.suppress(ssl.SSLWantReadError):  # it now waits for the server's answer
        tls.do_handshake()
    return outgoing.read()


def _read(sock: socket.socket, deadline: float, enough: Callable[[bytes], bool]) -> bytes:
    """What the peer sends until `enough`, end of file, the deadline or GREETING_MAX_BYTES."""
    data = b""
    while not enough(data) and len(data) < GREETING_MAX_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(GREETING_MAX_BYTES - len(data))
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _is_tls_record(data: bytes) -> bool:
    # A TLS record starts with its content type (22 handshake, 21 alert), then version 3.x.
    return len(data) >= 3 and data[0] in (21, 22) and data[1] == 3 and data[2] <= 4


def _clean(line: bytes) -> str:
    """A server's words are hostile on a terminal: printable ASCII only, one line."""
    chars = (
        " " if c.isspace() else c if c.isascii() and c.isprintable() else "?"
        for c in line.decode("latin-1")
    )
    return " ".join("".join(chars).split())
