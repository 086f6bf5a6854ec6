"""The support mailbox over IMAP: connect, and one exactly-once pass over a folder.

Exactly once: a message is stored, and its UID recorded in the folder's ledger, in one
database transaction; only after that commit is it flagged \\Seen (or moved) on the server.
A crash before the commit leaves the message to be fetched again; a crash after it leaves a
pending row, and the next pass flags the message without storing it again.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imap4 import IMAP4WithTimeout
from sqlmodel import col, select

from mailsupport import tlsprobe
from mailsupport.config import Settings
from mailsupport.errors import ConfigError, MailSupportError, TemporaryError
from mailsupport.pipeline import QUARANTINED, Incoming, Pipeline
from mailsupport.store.models import ImapFolder, ImapPending

log = logging.getLogger(__name__)

BATCH_BYTES = 16 * 1024 * 1024
# Mail that sat in the folder before polling started (IMAP_START unseen, all, since:) may
# have been answered by hand already: it is filed, not acknowledged.
BACKLOG_NO_ACK = "it was in the mailbox before mailsupport started reading it (IMAP_START)"

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
        raise TemporaryError(f"IMAP server {where} unreachable: {_reason(error)}") from None
    except imaplib.IMAP4.error as error:  # e.g. a "* BYE Too many connections" greeting
        raise TemporaryError(f"IMAP server {where} turned us away: {_reason(error)}") from None
    try:
        if settings.imap_security == "starttls":
            client.starttls(context)
        client.login(settings.imap_user, settings.imap_password.get_secret_value())
    except LoginError as error:
        _close(client)
        text = _reason(error)
        if "UNAVAILABLE" in text.upper() or "TRY AGAIN" in text.upper():
            raise TemporaryError(f"IMAP login to {where} refused for now: {text}") from None
        raise ConfigError(
            f"IMAP login to {where} as {settings.imap_user} failed: {text} "
            "(check MAILSUPPORT_IMAP_USER and MAILSUPPORT_IMAP_PASSWORD)"
        ) from None
    except ssl.SSLCertVerificationError as error:
        _close(client)
        raise _untrusted(where, error) from None
    except NETWORK_ERRORS as error:
        _close(client)
        raise TemporaryError(
            f"IMAP server {where} dropped the connection: {_reason(error)}"
        ) from None
    except IMAPClientError as error:
        _close(client)
        raise ConfigError(f"IMAP server {where}: {_reason(error)}") from None
    return client


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


@dataclass
class PollResult:
    folder: str
    counts: Counter[str] = field(default_factory=Counter)
    waiting: int = 0  # left on the server for the next pass (only when stopped early)
    uidvalidity_changed: bool = False
    flag_error: str = ""  # the server refused to flag or move taken mail (retried next pass)


class FolderPoller:
    """One pass over one folder. The caller holds the folder lock and the connection."""

    def __init__(self, settings: Settings, pipeline: Pipeline, client: IMAPClient) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.store = pipeline.store
        self.client = client
        self.folder = settings.imap_folder
        self._known_folders: set[str] = set()  # folders seen to exist on the server
        with _server_errors(settings):  # imapclient returns capabilities as bytes
            self.capabilities = {
                c.decode("ascii", "replace").upper() for c in client.capabilities()
            }

    def poll(
        self,
        now: Callable[[], datetime],
        should_stop: Callable[[], bool] = lambda: False,
        on_each: Callable[[Any], None] | None = None,
    ) -> PollResult:
        with _server_errors(self.settings):
            return self._poll(now, should_stop, on_each)

    def _poll(
        self,
        now: Callable[[], datetime],
        should_stop: Callable[[], bool],
        on_each: Callable[[Any], None] | None,
    ) -> PollResult:
        result = PollResult(self.folder)
        try:
            selected = self.client.select_folder(self.folder)
        except imaplib.IMAP4.abort:
            raise  # the connection broke: temporary, mapped by _server_errors
        except IMAPClientError as error:
            raise ConfigError(
                f"IMAP folder {self.folder!r} cannot be opened: {_reason(error)} "
                "(check MAILSUPPORT_IMAP_FOLDER)"
            ) from None
        uidvalidity = int(selected[b"UIDVALIDITY"])
        uidnext = int(selected.get(b"UIDNEXT", 0)) or self._max_uid() + 1
        ledger, result.uidvalidity_changed = self._ledger(uidvalidity, uidnext, now())
        self._flag_pending(ledger, result)

        todo = self._uids_to_take(ledger)
        for batch in self._batches(todo):
            if should_stop():
                break
            self._take(ledger, batch, now, result, on_each, should_stop)
            self._flag_pending(ledger, result)
        result.waiting = len([u for u in todo if u > ledger.last_uid])
        with self.store.write() as session:
            row = session.get(ImapFolder, ledger.id)
            assert row is not None
            row.last_poll_at = now()
            row.waiting = result.waiting
            if not result.waiting:
                row.last_success_at = row.last_poll_at
            session.add(row)
        return result

    # -- the ledger ---------------------------------------------------------------------------

    def _ledger(self, uidvalidity: int, uidnext: int, at: datetime) -> tuple[ImapFolder, bool]:
        """This folder's ledger row, created (or reset after a UIDVALIDITY change) as needed."""
        account = self.settings.imap_account
        with self.store.write() as session:
            row = session.exec(
                select(ImapFolder).where(
                    ImapFolder.account == account, ImapFolder.folder == self.folder
                )
            ).first()
            changed = row is not None and row.uidvalidity != uidvalidity
            if row is None:
                row = ImapFolder(account=account, folder=self.folder, uidvalidity=uidvalidity)
                self._start_from(row, self.settings.imap_start, uidnext)
                log.info(
                    "first poll of %s %s: IMAP_START=%s",
                    account,
                    self.folder,
                    self.settings.imap_start,
                )
            elif changed:
                # The mailbox was recreated or migrated: the old UIDs mean nothing now. Take
                # only what is unread; Message-IDs catch anything stored before.
                log.warning(
                    "UIDVALIDITY of %s %s changed from %s to %s: taking only unread mail",
                    account, self.folder, row.uidvalidity, uidvalidity,
                )  # fmt: skip
                row.uidvalidity = uidvalidity
                self._start_from(row, "unseen", uidnext)
                session.execute(
                    ImapPending.__table__.delete().where(  # type: ignore[attr-defined]
                        ImapPending.folder_id == row.id
                    )
                )
            session.add(row)
            session.flush()
            session.expunge(row)
            return row, changed

    @staticmethod
    def _start_from(row: ImapFolder, start: str, uidnext: int) -> None:
        existing = uidnext - 1
        row.last_uid, row.backlog_until, row.backlog_search = 0, 0, ""
        if start == "new":
            row.last_uid = existing  # what is there now is history, not news
        elif start == "unseen":
            row.backlog_until, row.backlog_search = existing, "UNSEEN"
        elif start == "all":  # every message there now, as backlog: filed, not acknowledged
            row.backlog_until, row.backlog_search = existing, "ALL"
        elif start.startswith("since:"):
            row.backlog_until, row.backlog_search = existing, start  # "since:YYYY-MM-DD"

    def _uids_to_take(self, ledger: ImapFolder) -> list[int]:
        found: set[int] = set()
        start = ledger.last_uid + 1
        if ledger.backlog_until >= start:
            criteria: list[Any] = [b"UID", f"{start}:{ledger.backlog_until}".encode()]
            if ledger.backlog_search == "UNSEEN":
                criteria.append(b"UNSEEN")
            elif ledger.backlog_search.startswith("since:"):
                day = date.fromisoformat(ledger.backlog_search.removeprefix("since:"))
                criteria += [b"SINCE", day]
            found.update(self.client.search(criteria))
            start = ledger.backlog_until + 1
        # "UID n:*" always includes the highest UID, even below n: filter it.
        found.update(self.client.search([b"UID", f"{start}:*".encode()]))
        return sorted(uid for uid in found if uid > ledger.last_uid)

    def _batches(self, uids: list[int]) -> Iterator[list[int]]:
        """At most IMAP_BATCH messages and about BATCH_BYTES per FETCH, so that a run of
        large messages never sits in memory at once."""
        for chunk in _chunks(uids, 500):
            sizes = self.client.fetch(chunk, [b"RFC822.SIZE"])
            batch: list[int] = []
            total = 0
            for uid in chunk:
                size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
                if batch and (len(batch) >= self.settings.imap_batch or total + size > BATCH_BYTES):
                    yield batch
                    batch, total = [], 0
                batch.append(uid)
                total += size
            if batch:
                yield batch

    def _max_uid(self) -> int:
        uids = self.client.search([b"ALL"])
        return max(uids) if uids else 0

    # -- taking a batch -----------------------------------------------------------------------

    def _take(
        self,
        ledger: ImapFolder,
        uids: list[int],
        now: Callable[[], datetime],
        result: PollResult,
        on_each: Callable[[Any], None] | None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        fetched = self.client.fetch(uids, [b"BODY.PEEK[]", b"INTERNALDATE"])
        items = [(uid, self._incoming(ledger, uid, fetched.pop(uid, None))) for uid in uids]
        # The worker processes parse ahead while this one stores.
        parsed = self.pipeline.parse_all(item for _, item in items if item is not None)
        outcomes = []
        taken = 0  # the highest UID dealt with; a stop leaves the rest for the next pass
        with contextlib.closing(parsed), self.store.write() as session:
            for uid, incoming in items:
                if should_stop():
                    break  # finish the message in hand, not the whole batch
                taken = uid
                if incoming is None:
                    continue
                item, parse = next(parsed)
                outcome = self.pipeline.process(session, item, now(), parse)
                outcomes.append(outcome)
                session.add(
                    ImapPending(
                        folder_id=ledger.id,  # type: ignore[arg-type]
                        uid=uid,
                        uidvalidity=ledger.uidvalidity,
                        quarantined=outcome.kind == QUARANTINED,
                    )
                )
            row = session.get(ImapFolder, ledger.id)
            assert row is not None
            row.last_uid = max(row.last_uid, taken)
            session.add(row)
        ledger.last_uid = max(ledger.last_uid, taken)
        result.counts.update(o.kind for o in outcomes)
        if on_each is not None:
            for outcome in outcomes:
                on_each(outcome)

    def _incoming(
        self, ledger: ImapFolder, uid: int, data: dict[bytes, Any] | None
    ) -> Incoming | None:
        """The message with this UID as the pipeline takes it; None when it is gone."""
        if data is None or b"BODY[]" not in data:
            data = self._fetch_again(uid)
        if data is None:
            return None
        return Incoming(
            bytes(data[b"BODY[]"]),
            f"imap:{self.settings.imap_account}/{self.folder};UID={uid}",
            _aware(data.get(b"INTERNALDATE")),
            no_ack_reason=BACKLOG_NO_ACK if uid <= ledger.backlog_until else "",
        )

    def _fetch_again(self, uid: int) -> dict[bytes, Any] | None:
        """A UID missing from a batch FETCH: expunged by someone else (nothing to take), or a
        server that left it out (some do, now and then): ask for it alone."""
        if not self.client.search([b"UID", str(uid).encode()]):
            log.info("UID %s of %s was expunged before it could be fetched", uid, self.folder)
            return None
        data = self.client.fetch([uid], [b"BODY.PEEK[]", b"INTERNALDATE"]).get(uid)
        if data is None or b"BODY[]" not in data:
            log.warning(
                "UID %s of %s exists but the server returns no body; skipped", uid, self.folder
            )
            return None
        return data

    # -- marking processed on the server --------------------------------------------------------

    def _flag_pending(self, ledger: ImapFolder, result: PollResult) -> None:
        """Flag or move what was stored. A refusal (bad folder name, quota) is reported but
        never stops new mail from being taken; the flags are tried again on the next pass."""
        with self.store.read() as session:
            pending = session.exec(
                select(ImapPending).where(
                    ImapPending.folder_id == ledger.id,
                    ImapPending.uidvalidity == ledger.uidvalidity,
                )
            ).all()
        if not pending:
            return
        done = [p.uid for p in pending if not p.quarantined]
        bad = [p.uid for p in pending if p.quarantined]
        try:
            self._mark(
                done, self.settings.imap_processed_folder, "MAILSUPPORT_IMAP_PROCESSED_FOLDER"
            )
            self._mark(
                bad, self.settings.imap_quarantine_folder, "MAILSUPPORT_IMAP_QUARANTINE_FOLDER"
            )
        except ConfigError as error:
            log.error("%s", error)
            result.flag_error = str(error)
            return
        with self.store.write() as session:
            session.execute(
                ImapPending.__table__.delete().where(  # type: ignore[attr-defined]
                    col(ImapPending.folder_id) == ledger.id,
                    col(ImapPending.uid).in_([p.uid for p in pending]),
                )
            )

    def _mark(self, uids: Sequence[int], target: str, setting: str) -> None:
        """\\Seen in place, or moved to `target` when one is configured."""
        if not uids:
            return
        try:
            self._mark_or_move(uids, target)
        except imaplib.IMAP4.abort:
            raise
        except IMAPClientError as error:  # a tagged NO: the server refuses, not a network fault
            where = f"folder {target!r}" if target else "flags"
            raise ConfigError(
                f"the IMAP server refuses to store {where} for taken mail: {_reason(error)}"
                + (f" (check {setting})" if target else "")
            ) from None

    def _mark_or_move(self, uids: Sequence[int], target: str) -> None:
        if not target:
            self.client.add_flags(uids, [b"\\Seen"], silent=True)
            return
        self._ensure_folder(target)
        if "MOVE" in self.capabilities:
            self.client.move(uids, target)
            return
        self.client.copy(uids, target)
        self.client.add_flags(uids, [b"\\Deleted", b"\\Seen"], silent=True)
        if "UIDPLUS" in self.capabilities:
            self.client.uid_expunge(uids)
        # Without UIDPLUS, an EXPUNGE would also remove messages others marked \Deleted;
        # we leave ours flagged and let the folder's owner expunge.

    def _ensure_folder(self, name: str) -> None:
        if name in self._known_folders:
            return
        ensure_folder(self.client, name)
        self._known_folders.add(name)


def ensure_folder(client: IMAPClient, name: str) -> None:
    """Create folder `name` on the server unless it exists (also used for the Sent copies)."""
    if not client.folder_exists(name):
        client.create_folder(name)
        log.info("created IMAP folder %s", name)


def _untrusted(where: str, error: ssl.SSLCertVerificationError) -> ConfigError:
    return ConfigError(
        f"IMAP server {where}: certificate not trusted ({error.verify_message}); "
        "fix the certificate, or set MAILSUPPORT_IMAP_SECURITY=none only on a trusted network"
    )


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:  # imapclient normalises INTERNALDATE to local time
        return value.astimezone()
    return value


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, bytes):
        text = error.decode("utf-8", "replace")
    text = text.removeprefix("b'").removesuffix("'")
    return " ".join(text.split()) or type(error).__name__


def _close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):  # closing after a failure: nothing more to say
        client.shutdown()


class _server_errors:
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
                f"IMAP server {self.where} dropped the connection: {_reason(error)}"
            ) from error
        if isinstance(error, IMAPClientError):
            raise TemporaryError(f"IMAP server {self.where} failed: {_reason(error)}") from error
        return False
