"""The IMAP test harness itself: real pymap and Dovecot servers behave as the poller tests need."""

from __future__ import annotations

import imaplib
import socket
import time
from datetime import UTC, datetime

import imapclient
import pytest

from tests.support.imapservers import (
    DOVECOT_BINARY,
    DovecotServer,
    ImapServer,
    PymapServer,
    ServerStartError,
)
from tests.support.processes import live_group_members

# What a dead server looks like to imapclient: the socket fails, or imaplib sees EOF (abort).
CONNECTION_LOST = (OSError, imaplib.IMAP4.error)


def make_raw(n: int, extra_body: bytes = b"") -> bytes:
    """A message with the quirks a byte-exact store must keep: folding, 8-bit, trailing space."""
    return (
        b"From: Customer <customer@example.org>\r\n"
        b"To: support@example.test\r\n"
        b"Subject: Order %d\r\n"
        b"  is late\r\n"
        b"Message-ID: <order-%d@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Hello, my order %d has not arrived. \r\n"
        b"Gr\xc3\xbc\xc3\x9fe, J\xc3\xb6rg\r\n" % (n, n, n)
    ) + extra_body


def fetch_all(server: ImapServer, folder: str = "INBOX") -> dict[int, dict[bytes, object]]:
    with server.client() as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        return client.fetch(uids, ["BODY.PEEK[]", "FLAGS", "RFC822.SIZE"]) if uids else {}


def test_fixture_starts_empty(imap_server: ImapServer) -> None:
    with imap_server.client() as client:
        assert [name for _flags, _delim, name in client.list_folders()] == ["INBOX"]
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_capabilities_match_attributes(imap_server: ImapServer) -> None:
    with imap_server.client() as client:
        capabilities = set(client.capabilities())  # read after LOGIN: pymap adds some only then
    assert imap_server.name in ("pymap", "dovecot")
    assert (b"IDLE" in capabilities) is imap_server.supports_idle
    assert (b"MOVE" in capabilities) is imap_server.supports_move
    assert (b"UIDPLUS" in capabilities) is imap_server.supports_uidplus


def test_append_and_fetch_back_byte_identical_unseen(imap_server: ImapServer) -> None:
    raws = [make_raw(n) for n in range(3)]
    uids = [imap_server.append(raw) for raw in raws]

    assert uids == sorted(uids) and len(set(uids)) == 3
    fetched = fetch_all(imap_server)
    assert sorted(fetched) == uids
    for uid, raw in zip(uids, raws, strict=True):
        assert fetched[uid][b"BODY[]"] == raw
        assert fetched[uid][b"RFC822.SIZE"] == len(raw)
        assert b"\\Seen" not in fetched[uid][b"FLAGS"]  # BODY.PEEK must not mark it read


def test_append_sets_flags_and_internal_date(imap_server: ImapServer) -> None:
    when = datetime(2024, 3, 1, 9, 30, 0, tzinfo=UTC)
    uid = imap_server.append(make_raw(1), flags=[b"\\Flagged"], date=when)

    with imap_server.client() as client:
        client.normalise_times = False  # keep the server's zone, compare as aware datetimes
        client.select_folder("INBOX", readonly=True)
        data = client.fetch([uid], ["FLAGS", "INTERNALDATE"])[uid]
    assert b"\\Flagged" in data[b"FLAGS"]
    assert data[b"INTERNALDATE"] == when


def test_append_to_other_folder(imap_server: ImapServer) -> None:
    imap_server.create_folder("Support")
    uid = imap_server.append(make_raw(7), folder="Support")

    assert fetch_all(imap_server, "Support")[uid][b"BODY[]"] == make_raw(7)
    assert fetch_all(imap_server, "INBOX") == {}


def test_delete_and_recreate_folder_changes_uidvalidity(imap_server: ImapServer) -> None:
    imap_server.create_folder("Support")
    imap_server.append(make_raw(1), folder="Support")
    with imap_server.client() as client:
        before = client.select_folder("Support", readonly=True)[b"UIDVALIDITY"]

    imap_server.delete_folder("Support")
    imap_server.create_folder("Support")

    with imap_server.client() as client:
        after = client.select_folder("Support", readonly=True)
    assert after[b"UIDVALIDITY"] != before
    assert after[b"EXISTS"] == 0


def test_idle_reports_exists_when_another_client_appends(imap_server: ImapServer) -> None:
    if not imap_server.supports_idle:
        pytest.skip(f"{imap_server.name} does not offer IDLE")
    with imap_server.client() as watcher:
        watcher.select_folder("INBOX")
        watcher.idle()
        try:
            imap_server.append(make_raw(1))
            seen: list[tuple[object, ...]] = []
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                # Not a short timeout: imaplib gives up on a line the timeout cut in two
                # ("unterminated line"), which a loaded machine made happen now and then.
                responses = watcher.idle_check(timeout=5)
                seen.extend(responses)
                if (1, b"EXISTS") in responses:
                    break
        finally:
            watcher.idle_done()
    assert (1, b"EXISTS") in seen, seen


def test_kill_breaks_clients_and_restart_brings_it_back(imap_server: ImapServer) -> None:
    raws = [make_raw(n) for n in range(2)]
    uids = [imap_server.append(raw) for raw in raws]
    client = imap_server.client()
    uidvalidity = client.select_folder("INBOX")[b"UIDVALIDITY"]

    imap_server.kill()
    with pytest.raises(CONNECTION_LOST):
        client.fetch(uids, ["BODY.PEEK[]"])
    client.shutdown()
    with pytest.raises(CONNECTION_LOST):
        imap_server.client()

    imap_server.restart()
    with imap_server.client() as client:
        selected = client.select_folder("INBOX")
        fetched = client.fetch(uids, ["BODY.PEEK[]"])
    if imap_server.persistent:
        assert selected[b"UIDVALIDITY"] == uidvalidity
        assert [fetched[uid][b"BODY[]"] for uid in uids] == raws
        assert imap_server.append(make_raw(9)) > max(uids)
    else:  # pymap's in-memory store: back up, but empty
        assert selected[b"EXISTS"] == 0


@pytest.mark.slow
def test_graceful_stop_and_restart(imap_server: ImapServer) -> None:
    uid = imap_server.append(make_raw(1))
    imap_server.stop()
    with pytest.raises(CONNECTION_LOST):
        imap_server.client()
    imap_server.restart()
    expected = {uid: make_raw(1)} if imap_server.persistent else {}
    assert {u: d[b"BODY[]"] for u, d in fetch_all(imap_server).items()} == expected


def test_pymap_maildir_persists_but_rewrites_messages() -> None:
    """Pins why the fixtures use pymap's dict backend: maildir is not byte-faithful."""
    with PymapServer(backend="maildir") as server:
        raw = make_raw(1)
        uid = server.append(raw)
        server.kill()
        server.restart()
        stored = fetch_all(server)[uid]
    assert stored[b"BODY[]"] == raw.replace(b"\r\n", b"\n")  # CRLF became bare LF
    assert stored[b"RFC822.SIZE"] == len(raw) - raw.count(b"\r\n")


@pytest.mark.slow
def test_twenty_megabyte_message(imap_server: ImapServer) -> None:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
    body = line * (20 * 1024 * 1024 // len(line) + 1)  # base64-looking lines, like an attachment
    raw = make_raw(1, extra_body=body)
    assert len(raw) > 20 * 1024 * 1024

    uid = imap_server.append(raw)
    with imap_server.client() as client:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch([uid], ["BODY.PEEK[]", "RFC822.SIZE"])[uid]
    assert data[b"RFC822.SIZE"] == len(raw)
    assert data[b"BODY[]"] == raw


def test_separate_fixtures(pymap_server: PymapServer, dovecot_server: DovecotServer) -> None:
    assert pymap_server.name == "pymap"
    assert dovecot_server.name == "dovecot"
    assert pymap_server.port != dovecot_server.port
    for server in (pymap_server, dovecot_server):
        with server.client() as client:
            assert client.select_folder("INBOX")[b"EXISTS"] == 0


@pytest.fixture(params=[PymapServer, DovecotServer], ids=["pymap", "dovecot"])
def server_class(request: pytest.FixtureRequest) -> type[PymapServer | DovecotServer]:
    """For tests that construct servers themselves (custom port, password, lifetime)."""
    if request.param is DovecotServer and DOVECOT_BINARY is None:
        pytest.skip("Dovecot is not installed (no /usr/sbin/dovecot and none on PATH)")
    return request.param


def test_close_leaves_no_process_or_files(server_class: type[PymapServer | DovecotServer]) -> None:
    with server_class() as server, server.client() as client:
        client.select_folder("INBOX")  # make Dovecot fork its login and imap processes too
        pgid = server.pid
        assert pgid is not None
        assert live_group_members(pgid)
    assert live_group_members(pgid) == []
    assert not server.dir.exists()
    with pytest.raises(OSError), socket.create_connection((server.host, server.port), timeout=2):
        pass


def test_start_failure_is_bounded_and_shows_the_log(
    server_class: type[PymapServer | DovecotServer],
) -> None:
    with socket.socket() as squatter:  # the pinned port is taken, so the server cannot listen
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(ServerStartError) as excinfo, server_class(port=port):
            pass
    assert time.monotonic() - began < 12
    assert "Log tail" in str(excinfo.value)
    assert "in use" in str(excinfo.value).lower()


def test_client_is_plain_imap_on_loopback(imap_server: ImapServer) -> None:
    with imap_server.client() as client:
        assert isinstance(client, imapclient.IMAPClient)
        assert not client.ssl
    assert imap_server.host == "127.0.0.1"
    assert imap_server.user == "support@example.test"


def test_password_starting_with_dash_is_not_taken_for_an_option(
    server_class: type[PymapServer | DovecotServer],
) -> None:
    with server_class(password="-dash-first") as server:  # start() waits for a working LOGIN
        assert server.password == "-dash-first"


def test_dovecot_serves_several_users_each_their_own_maildir() -> None:
    if DOVECOT_BINARY is None:
        pytest.skip("Dovecot is not installed")
    users = {"a@example.test": "password-a", "b@example.test": None, "c@example.test": None}
    with DovecotServer(users=users) as server:
        assert server.user == "a@example.test" and server.password == "password-a"
        assert list(server.users) == list(users)  # made-up passwords for the others
        server.append(make_raw(1))  # the first user, as with one
        server.append(make_raw(2), user="b@example.test")
        server.create_folder("Billing", user="b@example.test")
        server.append(make_raw(3), folder="Billing", user="b@example.test")
        counts = {}
        for user in users:
            with server.client(user) as client:
                folders = sorted(name for _flags, _delim, name in client.list_folders())
                counts[user] = (folders, client.select_folder("INBOX")[b"EXISTS"])
        assert counts == {
            "a@example.test": (["INBOX"], 1),
            "b@example.test": (["Billing", "INBOX"], 1),
            "c@example.test": (["INBOX"], 0),
        }
        assert (server.home("b@example.test") / "Maildir" / ".Billing").is_dir()
        assert not (server.home("c@example.test") / "Maildir" / ".Billing").exists()
        client = imapclient.IMAPClient(server.host, server.port, ssl=False, timeout=10)
        with pytest.raises(imaplib.IMAP4.error):  # each has a password of their own
            client.login("c@example.test", "password-a")
        client.shutdown()
