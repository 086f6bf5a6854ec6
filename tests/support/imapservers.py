"""Real IMAP servers on loopback for the test suite: pymap (always) and Dovecot (when installed).

Each server is a subprocess in its own process group, listening on 127.0.0.1 on a free port,
speaking plain IMAP (no TLS), with one user whose INBOX starts empty.

Fixtures (registered for every test by conftest.py's pytest_plugins; import only the types):

    from tests.support.imapservers import ImapServer

    def test_poll(imap_server: ImapServer) -> None:  # runs once on pymap, once on Dovecot
        uid = imap_server.append(b"Subject: hi\r\n\r\nbody\r\n")
        with imap_server.client() as client:  # logged in; logs out when the block ends
            client.select_folder("INBOX")

- `imap_server`: parametrized, ids "pymap" and "dovecot". The Dovecot case is skipped with a
  reason when no dovecot binary is found (the CI installs it, so there it runs).
- `pymap_server`, `dovecot_server`: one kind only.
- `dovecot_oauth`: Dovecot that also takes OAuth2 (see below), with the `oauth_server`
  fixture of tests/support/oauthserver.py as its authorisation server.

Several users (Dovecot only): `DovecotServer(users={"a@example.test": "pw-a", "b@...": None})`
serves each its own Maildir (a home per user, `%u`); a None password is made up. `user` and
`password` are the first user's, so everything written for one user works unchanged; the
others are reached with `user=` on `client()`, `append()`, `create_folder()` and
`delete_folder()`, their passwords in `server.users`, their Maildirs at `server.home(user)`.
Without `users` the one user's home is the same directory as always (`server.home()`).

OAuth2 (Dovecot only): `DovecotServer(user=..., oauth2_introspection_url=URL)` adds AUTH=XOAUTH2
and AUTH=OAUTHBEARER, checked by Dovecot's oauth2 passdb, which POSTs the token to URL (RFC
7662) on every login (no auth cache, so a revoked token is refused at once). The IMAP login
name must equal the `username` the introspection answers, else Dovecot refuses ("Username
... did not match"); any such name is let in, and every name shares the one Maildir. In
`dovecot_oauth` the user is `oauth_server.app_user` (support@example.com), so a token for it
from client_credentials, or from `oauth_server.grant(oauth_server.app_user)` and a refresh,
logs in as that user. PLAIN and LOGIN stay for the password (`client()`, `append()`); the
token is never taken as a password. A refused token costs about 0.5 s (Dovecot answers
failures on a half-second timer); the per-IP penalty for failed logins is switched off.

All are function-scoped: each test gets its own process and store, so it may kill, stop and
restart its server freely. Startup until LOGIN works: pymap ~0.2 s, Dovecot ~0.07 s.

Outside fixtures the classes are context managers (`with DovecotServer() as server:`, or
`start_server("pymap")`); leaving the block SIGKILLs the process group and deletes the temp dir.
An atexit hook and, on Linux, a parent-death signal stop servers even if pytest is killed.

What differs between the servers:
- Both advertise IDLE, MOVE and UIDPLUS after LOGIN (pymap only lists them after LOGIN).
- `persistent`: Dovecot keeps mail, UIDs and UIDVALIDITY in its Maildir across stop()/kill()
  + restart(). pymap runs its in-memory `dict` backend, so restart() brings back an empty
  server; its on-disk `maildir` backend would persist, but it rewrites messages (bare LF line
  ends, re-serialised headers), and byte-exact raw mail matters more here. `PymapServer(
  backend="maildir")` exists for tests that want pymap to persist and can live with that.
- Dovecot's graceful stop() takes ~1 s (its master waits before exiting); kill() is instant.
- pymap's dict backend numbers the first message in a mailbox UID 101, Dovecot UID 1.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import imaplib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import imapclient
import pytest

from tests.support.dovecotconfig import (
    DOVECOT_CONFIG,
    NO_PENALTY_ANVIL_EXTRA,
    OAUTH2_ANVIL_EXTRA,
    OAUTH2_AUTH_EXTRA,
    OAUTH2_AUTH_MECHANISMS,
    OAUTH2_CONFIG,
    OAUTH2_PASSDB,
    QUICK_REFUSALS_AUTH_EXTRA,
    group_exists,
    user_exists,
)
from tests.support.processes import DIE_WITH_PARENT, live_group_members

if TYPE_CHECKING:  # the fixture itself is registered by conftest.py
    from tests.support.oauthserver import OAuthServer

__all__ = [
    "DOVECOT_BINARY",
    "DovecotServer",
    "ImapServer",
    "PymapServer",
    "ServerStartError",
    "dovecot_oauth",
    "dovecot_server",
    "imap_server",
    "pymap_server",
    "start_server",
]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0  # seconds until the port answers and LOGIN succeeds
STOP_TIMEOUT = 5.0  # graceful shutdown before SIGKILL
CLIENT_TIMEOUT = 30.0  # socket timeout for clients; generous for 20 MB literals on slow CI
DEFAULT_USER = "support@example.test"  # an address-like login, as real mailboxes have


def _find_dovecot() -> str | None:
    if os.access("/usr/sbin/dovecot", os.X_OK):
        return "/usr/sbin/dovecot"
    return shutil.which("dovecot")


DOVECOT_BINARY = _find_dovecot()


class ImapServer(Protocol):
    """What a test sees of a running server, whichever implementation it is."""

    host: str
    port: int
    user: str
    password: str
    name: str  # "pymap" or "dovecot"
    supports_idle: bool
    supports_move: bool
    supports_uidplus: bool
    persistent: bool  # mail, UIDs and UIDVALIDITY survive stop()/kill() + restart()

    @property
    def users(self) -> dict[str, str]: ...  # every login -> its password, `user` first

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[bytes] = (),
        date: datetime | None = None,
        user: str | None = None,
    ) -> int: ...

    def create_folder(self, name: str, user: str | None = None) -> None: ...

    def delete_folder(self, name: str, user: str | None = None) -> None: ...

    def client(self, user: str | None = None) -> imapclient.IMAPClient: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...


class ServerStartError(RuntimeError):
    """The server did not come up in time; the message carries the tail of its log."""


_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]", re.IGNORECASE)
_ADDRESS_IN_USE = re.compile(r"address already in use|errno 98|eaddrinuse", re.IGNORECASE)
_LIVE: set[_ManagedServer] = set()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _ManagedServer:
    """Process handling shared by both servers; subclasses say how to configure and launch."""

    name: str
    supports_idle: bool
    supports_move: bool
    supports_uidplus: bool
    persistent: bool

    def __init__(self, user: str = DEFAULT_USER, password: str | None = None, port: int = 0):
        self.host = HOST
        self.port = port
        self._port_pinned = port != 0  # a caller-chosen port is never swapped on bind failure
        self.user = user
        self.password = password or secrets.token_urlsafe(12)
        self.other_users: dict[str, str] = {}  # login -> password, besides `user`
        self.dir = Path(tempfile.mkdtemp(prefix=f"ms-{self.name}-"))
        # Dovecot's unprivileged helpers must be able to traverse into the dir.
        self.dir.chmod(0o755)
        self._stderr_log = self.dir / "server-output.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0  # time of the last start until LOGIN worked

    # -- subclass hooks ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write config and users; called before every launch (port may have changed)."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _log_files(self) -> list[Path]:
        return [self._stderr_log]

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch and wait until LOGIN works; on a port clash pick another port (unless pinned)."""
        attempts = 1 if self._port_pinned else 3
        for attempt in range(attempts):
            if not self._port_pinned:
                self.port = _free_port()
            try:
                self._launch()
                return self
            except ServerStartError as exc:
                last_attempt = attempt == attempts - 1
                if last_attempt or not _ADDRESS_IN_USE.search(str(exc)):
                    raise
        raise AssertionError("unreachable")

    def restart(self) -> None:
        """Start again on the same port with the same mail store."""
        if self.running:
            self.stop()
        self._launch()

    def stop(self) -> None:
        """Graceful shutdown (SIGTERM to the server), SIGKILL after STOP_TIMEOUT."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        self._kill_group()

    def kill(self) -> None:
        """SIGKILL the whole process group, as if the server machine died; clients see EOF/RST."""
        if self._proc is not None:
            self._kill_group()

    def close(self) -> None:
        """Kill (fast: the store is thrown away) and delete the temp dir."""
        try:
            self.kill()
        finally:
            _LIVE.discard(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _launch(self) -> None:
        self._prepare()
        began = time.monotonic()
        with open(self._stderr_log, "ab") as output:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.dir,
                start_new_session=True,  # own process group: kill() reaches every child
                preexec_fn=DIE_WITH_PARENT,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(began + START_TIMEOUT)
        except BaseException:
            self._kill_group()
            raise
        self.startup_seconds = time.monotonic() - began

    def _wait_ready(self, deadline: float) -> None:
        last_error = "no attempt made"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                last_error = f"server exited with status {self._proc.returncode}"
                break
            try:
                # Short probe: a port squatted by something that never greets must not
                # delay noticing that our server exited.
                client = imapclient.IMAPClient(self.host, self.port, ssl=False, timeout=0.5)
            except (OSError, imaplib.IMAP4.error) as exc:  # not listening, or closed unready
                last_error = f"connect: {exc}"
                time.sleep(0.02)
                continue
            try:
                client.login(self.user, self.password)
                client.logout()
                return
            except (OSError, imaplib.IMAP4.error) as exc:  # e.g. auth process still starting
                last_error = f"login: {exc}"
                with contextlib.suppress(Exception):
                    client.shutdown()
                time.sleep(0.05)
        raise ServerStartError(
            f"{self.name} did not accept LOGIN on {self.host}:{self.port} within "
            f"{START_TIMEOUT:.0f} s ({last_error}). Log tail:\n{self.log_tail()}"
        )

    def _kill_group(self) -> None:
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session makes the server its own group leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_TIMEOUT)
        # Dovecot's children are reparented to init once the master is gone. Wait until none
        # is alive, so a restart never races a dying imap-login still holding the port. Their
        # zombies are init's to reap (slowly, on some CI VMs), and hold no sockets or files.
        deadline = time.monotonic() + STOP_TIMEOUT
        while (survivors := live_group_members(pgid)) and time.monotonic() < deadline:
            for pid in survivors:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        if proc.poll() is None or live_group_members(pgid):
            raise RuntimeError(f"{self.name} (process group {pgid}) survived SIGKILL")

    def log_tail(self, lines: int = 40) -> str:
        chunks = []
        for path in self._log_files():
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            chunks.append(f"--- {path.name} ---\n{tail}")
        return "\n".join(chunks) or "(no log output)"

    # -- mail operations ----------------------------------------------------------------------

    @property
    def users(self) -> dict[str, str]:
        """Every login and its password, `user` first."""
        return {self.user: self.password, **self.other_users}

    def client(self, user: str | None = None) -> imapclient.IMAPClient:
        """A logged-in plain-text client (as `user`, by default the first one); the caller
        closes it (it is a context manager)."""
        login = user or self.user
        client = imapclient.IMAPClient(self.host, self.port, ssl=False, timeout=CLIENT_TIMEOUT)
        try:
            client.login(login, self.users[login])
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return client

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Sequence[bytes] = (),
        date: datetime | None = None,
        user: str | None = None,
    ) -> int:
        """APPEND `raw` unchanged and return its UID (from APPENDUID, else the highest UID)."""
        with self.client(user) as client:
            response = client.append(folder, raw, flags=tuple(flags), msg_time=date)
            match = _APPENDUID.search(response or b"")
            if match:
                return int(match.group(1))
            client.select_folder(folder, readonly=True)
            return max(client.search(["ALL"]))

    def create_folder(self, name: str, user: str | None = None) -> None:
        with self.client(user) as client:
            client.create_folder(name)

    def delete_folder(self, name: str, user: str | None = None) -> None:
        with self.client(user) as client:
            client.delete_folder(name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid}>"


class PymapServer(_ManagedServer):
    """pymap, by default on its in-memory `dict` backend; `backend="maildir"` for an on-disk store.

    Why `dict` by default: it returns messages byte for byte as appended. The `maildir` backend
    re-serialises every message through the `email` package and stores it with bare LF line
    ends, so BODY[] differs from what was appended (and RFC822.SIZE shrinks); it does keep mail
    and UIDVALIDITY across restart(), which `dict` cannot (restart gives an empty server).
    """

    name = "pymap"
    supports_idle = True
    supports_move = True
    supports_uidplus = True

    def __init__(
        self,
        user: str = DEFAULT_USER,
        password: str | None = None,
        port: int = 0,
        backend: str = "dict",
    ):
        if backend not in ("dict", "maildir"):
            raise ValueError(f"unknown pymap backend {backend!r}: use 'dict' or 'maildir'")
        self.backend = backend
        self.persistent = backend == "maildir"
        super().__init__(user, password, port)

    def _prepare(self) -> None:
        (self.dir / "run_pymap.py").write_text(_PYMAP_BOOTSTRAP)
        if self.backend != "maildir":
            return
        store = self.dir / "maildir"
        store.mkdir(exist_ok=True)
        # passwd(5)-style: name:password:uid:gid:comment:home:shell; home is relative to the
        # store. A uid of "0" would make the user a pymap admin, so leave it empty.
        (store / "pymap-etc-passwd").write_text(f"{self.user}:::::mail:\r\n")
        (store / "pymap-etc-shadow").write_text(
            f"{self.user}:{_pymap_password_hash(self.password)}:::::::\r\n"
        )

    def _command(self) -> list[str]:
        if self.backend == "maildir":
            backend_args = ["maildir", str(self.dir / "maildir")]
        else:  # without --demo-data the demo user starts with an empty INBOX
            # `--opt=value`: a random password may start with "-", which argparse would take
            # for an option.
            backend_args = ["dict", f"--demo-user={self.user}", f"--demo-password={self.password}"]
        return [
            sys.executable,
            str(self.dir / "run_pymap.py"),
            # Optional services (installed via extras) would bind their own ports.
            *("--no-service", "admin", "--no-service", "managesieve", "--no-service", "swim"),
            *("--host", self.host, "--port", str(self.port), "--no-tls"),
            *backend_args,
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FQDN"] = "localhost"  # else every greeting calls getfqdn(), slow without DNS
        env["TMPDIR"] = str(self.dir)  # where the optional `pid` package puts its pid file
        return env


# pymap has no __main__ module; running main() from a script also keeps us on this interpreter
# rather than whatever `pymap` script is first on PATH, and `ps` shows which temp dir a process
# belongs to. Without passlib, pymap hashes and checks passwords with 500,000 PBKDF2 rounds:
# 0.3 s per LOGIN. Test passwords need no such cost, so lower it; if a pymap release renames
# this, the patch is skipped and LOGIN is merely slower.
_PYMAP_BOOTSTRAP = """\
import functools
import pymap.config
from pysasl.hashing import BuiltinHash
if getattr(pymap.config, "BuiltinHash", None) is BuiltinHash:
    pymap.config.BuiltinHash = functools.partial(BuiltinHash, rounds=1000)
from pymap.main import main
main()
"""


def _pymap_password_hash(password: str) -> str:
    """Hash for the maildir users file, the way pymap verifies: passlib if installed, else pysasl.

    Few rounds on purpose: the hash only guards a throwaway test mailbox and LOGIN stays fast.
    """
    try:
        from passlib.hash import pbkdf2_sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from pysasl.hashing import BuiltinHash

        return BuiltinHash(rounds=1000).hash(password)
    return str(pbkdf2_sha256.using(rounds=1000).hash(password))


class DovecotServer(_ManagedServer):
    """Dovecot from a config in its temp dir; works as root and as an ordinary user."""

    name = "dovecot"
    supports_idle = True
    supports_move = True
    supports_uidplus = True
    persistent = True

    def __init__(
        self,
        user: str = DEFAULT_USER,
        password: str | None = None,
        port: int = 0,
        oauth2_introspection_url: str | None = None,
        users: Mapping[str, str | None] | None = None,
    ):
        if DOVECOT_BINARY is None:
            raise FileNotFoundError("dovecot is not installed (no /usr/sbin/dovecot, none on PATH)")
        self.binary = DOVECOT_BINARY
        self.oauth2_introspection_url = oauth2_introspection_url
        self.home_per_user = users is not None
        if users:  # the first is `user`, the others are other_users
            user, password = next(iter(users.items()))
        super().__init__(user, password, port)
        for name, secret in list((users or {}).items())[1:]:
            self.other_users[name] = secret or secrets.token_urlsafe(12)
        self.config_path = self.dir / "dovecot.conf"
        self.log_path = self.dir / "dovecot.log"

    def _log_files(self) -> list[Path]:
        return [self.log_path, self._stderr_log]

    def home(self, user: str | None = None) -> Path:
        """The directory of `user`'s Maildir (the first user's by default)."""
        if not self.home_per_user:
            return self.dir / "home"
        return self.dir / "home" / (user or self.user)

    def _prepare(self) -> None:
        homes = [self.dir / "home", *(self.home(u) for u in self.users if self.home_per_user)]
        for home in homes:
            home.mkdir(exist_ok=True)
        passwd = "".join(f"{name}:{{PLAIN}}{secret}\n" for name, secret in self.users.items())
        (self.dir / "passwd").write_text(passwd)
        if os.geteuid() == 0:
            # Dovecot refuses uid 0 for mail access, so mail is owned by nobody; its helper
            # processes run as the packaged dovenull/dovecot users, chrooted as usual.
            mail_uid, mail_gid = 65534, 65534
            login_user = "dovenull" if user_exists("dovenull") else "nobody"
            internal_user = "dovecot" if user_exists("dovecot") else "nobody"
            internal_group = "dovecot" if group_exists("dovecot") else "nogroup"
            for home in homes:
                os.chown(home, mail_uid, mail_gid)
            chroot = ""
        else:
            # Unprivileged: everything runs as us, and chroot (root only) is switched off.
            mail_uid, mail_gid = os.getuid(), os.getgid()
            login_user = internal_user = pwd.getpwuid(mail_uid).pw_name
            internal_group = grp.getgrgid(mail_gid).gr_name  # unix sockets get chgrp'ed to it
            chroot = "  chroot =\n"
        self.config_path.write_text(
            DOVECOT_CONFIG.format(
                dir=self.dir,
                host=self.host,
                port=self.port,
                login_user=login_user,
                internal_user=internal_user,
                internal_group=internal_group,
                mail_uid=mail_uid,
                mail_gid=mail_gid,
                home=f"{self.dir}/home/%u" if self.home_per_user else f"{self.dir}/home",
                chroot=chroot,
                **self._auth_settings(),
            )
        )
        # After a SIGKILL the pid file is stale; never let a recycled pid block the restart.
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "run" / "master.pid").unlink()

    def _auth_settings(self) -> dict[str, str]:
        """Password logins only, or (with an introspection URL) OAuth2 beside them. With
        several users, a refused password is answered without the usual delays: their tests
        refuse many (one mailbox's wrong password among others that work)."""
        if self.oauth2_introspection_url is None:
            quick = self.home_per_user
            return {
                "auth_mechanisms": "plain login",
                "auth_extra": QUICK_REFUSALS_AUTH_EXTRA if quick else "",
                "oauth2_passdb": "",
                "anvil_extra": NO_PENALTY_ANVIL_EXTRA.format() if quick else "",
            }
        (self.dir / "dovecot-oauth2.conf.ext").write_text(
            OAUTH2_CONFIG.format(introspection_url=self.oauth2_introspection_url)
        )
        return {
            "auth_mechanisms": OAUTH2_AUTH_MECHANISMS,
            "auth_extra": OAUTH2_AUTH_EXTRA,
            "oauth2_passdb": OAUTH2_PASSDB.format(dir=self.dir),
            "anvil_extra": OAUTH2_ANVIL_EXTRA.format(),
        }

    def _command(self) -> list[str]:
        return [self.binary, "-F", "-c", str(self.config_path)]


SERVER_KINDS: dict[str, type[_ManagedServer]] = {"pymap": PymapServer, "dovecot": DovecotServer}


@contextlib.contextmanager
def start_server(kind: str, **kwargs: Any) -> Iterator[_ManagedServer]:
    """Run a fresh server of `kind` ("pymap" or "dovecot") for the duration of the block."""
    with SERVER_KINDS[kind](**kwargs) as server:
        yield server


@atexit.register
def _close_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


def _skip_without_dovecot() -> None:
    if DOVECOT_BINARY is None:
        pytest.skip("Dovecot is not installed (no /usr/sbin/dovecot and none on PATH)")


@pytest.fixture
def pymap_server() -> Iterator[PymapServer]:
    with PymapServer() as server:
        yield server


@pytest.fixture
def dovecot_server() -> Iterator[DovecotServer]:
    _skip_without_dovecot()
    with DovecotServer() as server:
        yield server


@pytest.fixture
def dovecot_oauth(oauth_server: OAuthServer) -> Iterator[DovecotServer]:
    """Dovecot whose user is `oauth_server.app_user`, taking that user's OAuth2 tokens."""
    _skip_without_dovecot()
    with DovecotServer(
        user=oauth_server.app_user, oauth2_introspection_url=oauth_server.introspection_url
    ) as server:
        yield server


@pytest.fixture(params=["pymap", "dovecot"])
def imap_server(request: pytest.FixtureRequest) -> Iterator[_ManagedServer]:
    if request.param == "dovecot":
        _skip_without_dovecot()
    with start_server(request.param) as server:
        yield server
