"""Many mailboxes: one `poll` and one daemon take the mail of every mailbox in the mailboxes
file, each on its own, against one Dovecot serving several users (tests/support).

Three mailboxes on two Dovecot users: `sales` (the INBOX of sales@), `billing` (the INBOX of
billing@) and `refunds` (billing@'s folder Refunds). A wrong password, or a server that is
down, on one leaves the others working; `status` says which failed and why.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailsupport.store.db import Store
from tests.support.cli import cli
from tests.support.daemons import wait_until
from tests.support.imapservers import DOVECOT_BINARY, DovecotServer
from tests.support.mailboxes import mail, mid, stored_ids

SALES, BILLING = "sales@example.test", "billing@example.test"
# name -> (address, IMAP user, folder); the order of the file.
BOXES = {
    "sales": ("sales@example.com", SALES, "INBOX"),
    "billing": ("billing@example.com", BILLING, "INBOX"),
    "refunds": ("refunds@example.com", BILLING, "Refunds"),
}
MESSAGE = {"sales": 1, "billing": 2, "refunds": 3}  # mail(i) delivered to each


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    if DOVECOT_BINARY is None:
        pytest.skip("Dovecot is not installed (no /usr/sbin/dovecot and none on PATH)")
    with DovecotServer(users={SALES: None, BILLING: None}) as server:
        server.create_folder("Refunds", user=BILLING)
        yield server


def closed_port() -> int:
    """A port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mailboxes_file(
    path: Path,
    server: DovecotServer,
    wrong: str = "",
    down: str = "",
    extra: dict[str, tuple[str, str, str]] | None = None,
) -> Path:
    """The three mailboxes (and `extra` ones) as a TOML file; `wrong` names a mailbox given
    a wrong password, `down` one whose server does not listen."""
    tables = []
    for name, (address, user, folder) in {**BOXES, **(extra or {})}.items():
        password = "not-the-password-4711" if name == wrong else server.users[user]
        port = closed_port() if name == down else server.port
        tables.append(
            f"[[mailbox]]\nname = {json.dumps(name)}\naddress = {json.dumps(address)}\n"
            f'imap_host = "{server.host}"\nimap_port = {port}\nimap_security = "none"\n'
            f"imap_user = {json.dumps(user)}\nimap_password = {json.dumps(password)}\n"
            f"imap_folder = {json.dumps(folder)}\n"
        )
    path.write_text("\n".join(tables))
    return path


def desk_env(env_for_cli: dict[str, str], file: Path, **extra: str) -> dict[str, str]:
    return {
        **env_for_cli,
        "MAILSUPPORT_MAILBOXES_FILE": str(file),
        **{f"MAILSUPPORT_{k.upper()}": v for k, v in extra.items()},
    }


def deliver(server: DovecotServer, name: str) -> str:
    """mail(i) into the mailbox `name`'s folder; its Message-ID."""
    address, user, folder = BOXES[name]
    i = MESSAGE[name]
    server.append(mail(i, to=f"<{address}>"), folder=folder, user=user)
    return mid(i)


def deliver_all(server: DovecotServer) -> list[str]:
    return sorted(deliver(server, name) for name in BOXES)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {box["name"]: box for box in report["mailboxes"]}


# -- poll -------------------------------------------------------------------------------------


def test_one_poll_takes_the_mail_of_every_mailbox(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    env = desk_env(env_for_cli, mailboxes_file(tmp_path / "mailboxes.toml", dovecot),
                   imap_start="all")  # fmt: skip
    ids = deliver_all(dovecot)
    result = cli(env, "poll")
    assert result.exit_code == 0, result.output
    for name, (_, _, folder) in BOXES.items():
        assert f"poll {name} ({folder}): read 1, new tickets 1," in result.stdout
    assert result.stderr == ""
    assert stored_ids(store) == ids
    again = cli(env, "poll")
    assert again.exit_code == 0 and again.stdout.count("read 0, new tickets 0,") == 3
    report = json.loads(cli(env, "status", "--json").stdout)
    boxes = by_name(report)
    assert list(boxes) == list(BOXES)
    assert boxes["refunds"]["folder"] == "Refunds" and boxes["refunds"]["waiting"] == 0
    assert all(b["last_success_at"] and b["last_error"] == "" for b in boxes.values())


def test_poll_mailbox_takes_only_that_one_and_an_unknown_name_is_a_usage_error(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    env = desk_env(env_for_cli, mailboxes_file(tmp_path / "mailboxes.toml", dovecot),
                   imap_start="all")  # fmt: skip
    deliver_all(dovecot)
    result = cli(env, "poll", "--mailbox", "refunds")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "poll refunds (Refunds): read 1, new tickets 1, threaded replies 0, duplicates 0, "
        "quarantined 0"
    ]
    assert stored_ids(store) == [mid(MESSAGE["refunds"])]
    unknown = cli(env, "poll", "--mailbox", "nosuch")
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == (
        "mailsupport: no mailbox named 'nosuch' (the mailboxes: sales, billing, refunds)"
    )
    assert stored_ids(store) == [mid(MESSAGE["refunds"])]


@pytest.mark.slow
def test_a_wrong_password_leaves_the_other_two_working_and_status_says_why(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    file = mailboxes_file(tmp_path / "mailboxes.toml", dovecot, wrong="billing")
    env = desk_env(env_for_cli, file, imap_start="all")
    deliver_all(dovecot)
    result = cli(env, "poll")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("mailsupport: mailbox billing: IMAP login to 127.0.0.1:")
    assert f"as {BILLING} failed" in line
    assert "not-the-password-4711" not in result.output
    assert stored_ids(store) == sorted(mid(MESSAGE[n]) for n in ("sales", "refunds"))

    report = json.loads(cli(env, "status", "--json").stdout)
    boxes = by_name(report)
    billing = boxes["billing"]
    assert billing["last_error"].startswith("IMAP login to 127.0.0.1:")
    assert billing["last_error_at"] is not None and billing["last_success_at"] is None
    assert billing["server"]["error"].startswith("IMAP login to")  # asked again, live
    assert {boxes[n]["last_error"] for n in ("sales", "refunds")} == {""}
    assert boxes["sales"]["waiting"] == 0
    text = cli(env, "status").stdout
    assert f"mailbox billing <billing@example.com>, {BILLING}@127.0.0.1:" in text
    assert "  last error, " in text and f"as {BILLING} failed" in text
    assert text.count("last error") == 1  # the two that work have none

    # The password set right: its first pass is a first poll (IMAP_START), not a change of
    # UIDVALIDITY, and the error is gone.
    mailboxes_file(file, dovecot)
    fixed = cli(env, "poll", "--mailbox", "billing")
    assert fixed.exit_code == 0, fixed.output
    assert fixed.stdout.startswith("poll billing (INBOX): read 1, new tickets 1,")
    assert "UIDVALIDITY" not in fixed.stdout
    assert stored_ids(store) == sorted(mid(i) for i in MESSAGE.values())
    billing = by_name(json.loads(cli(env, "status", "--offline", "--json").stdout))["billing"]
    assert billing["last_error"] == "" and billing["last_error_at"] is None


def test_the_exit_code_tells_the_worst_failure(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    file = tmp_path / "mailboxes.toml"
    down = cli(desk_env(env_for_cli, mailboxes_file(file, dovecot, down="sales")), "poll")
    assert down.exit_code == 75, down.output  # a server away passes
    assert down.stderr.startswith("mailsupport: mailbox sales: IMAP server 127.0.0.1:")
    both = cli(desk_env(env_for_cli, mailboxes_file(file, dovecot, "billing", "sales")), "poll")
    assert both.exit_code == 2  # a person must fix the password: that comes first
    assert sorted(line.split(":")[1] for line in both.stderr.splitlines()) == [
        " mailbox billing",
        " mailbox sales",
    ]
    assert "poll refunds (Refunds): read 0" in both.stdout


def test_status_offline_and_doctor_name_each_mailbox(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    file = mailboxes_file(tmp_path / "mailboxes.toml", dovecot, wrong="refunds")
    # No IMAP server: its mail comes by `ingest`.
    file.write_text(f'{file.read_text()}\n[[mailbox]]\nname = "web"\naddress = "web@example.com"\n')
    env = desk_env(env_for_cli, file)
    offline = cli(env, "status", "--offline")
    assert offline.exit_code == 0, offline.output
    assert "mailbox web <web@example.com>: not polled" in offline.stdout
    assert "mailbox sales <sales@example.com>, " in offline.stdout
    assert "last successful poll never" in offline.stdout
    doctor = cli(env, "doctor")
    assert doctor.exit_code == 1
    lines = doctor.stdout.splitlines()
    assert "ok    mailboxes: 4 (sales, billing, refunds, web)" in lines
    assert any(x.startswith(f"ok    IMAP, mailbox sales: logged in to {SALES}@") for x in lines)
    assert any(x.startswith("ok    IMAP, mailbox billing: logged in to") for x in lines)
    [bad] = [x for x in lines if x.startswith("FAIL  IMAP, mailbox refunds: ")]
    assert f"as {BILLING} failed" in bad
    assert "skip  IMAP, mailbox web: no imap_host" in doctor.stdout


def test_doctor_names_the_line_and_key_of_a_bad_mailboxes_file(
    env_for_cli: dict[str, str], store: Store, tmp_path: Path
) -> None:
    file = tmp_path / "mailboxes.toml"
    file.write_text(
        '[[mailbox]]\nname = "sales"\naddress = "sales@example.com"\n\n'
        '[[mailbox]]\nname = "billing"\naddress = "billing@example.com"\nimap_prot = 143\n'
    )
    result = cli(desk_env(env_for_cli, file), "doctor")
    assert result.exit_code == 1
    [line] = [x for x in result.stdout.splitlines() if x.startswith("FAIL  mailboxes: ")]
    assert "line 8, mailbox 2, imap_prot: unknown key (did you mean imap_port?)" in line
    poll = cli(desk_env(env_for_cli, file), "poll")
    assert poll.exit_code == 2 and "line 8" in poll.stderr


def test_without_a_mailboxes_file_poll_is_as_it_was(
    dovecot: DovecotServer, env_for_cli: dict[str, str], store: Store
) -> None:
    env = {
        **env_for_cli,
        "MAILSUPPORT_IMAP_HOST": dovecot.host,
        "MAILSUPPORT_IMAP_PORT": str(dovecot.port),
        "MAILSUPPORT_IMAP_USER": SALES,
        "MAILSUPPORT_IMAP_PASSWORD": "wrong-password",
        "MAILSUPPORT_IMAP_SECURITY": "none",
    }
    wrong = cli(env, "poll")
    assert wrong.exit_code == 2
    assert wrong.stderr.startswith("mailsupport: IMAP login to 127.0.0.1:")  # no mailbox named
    assert "(check MAILSUPPORT_IMAP_USER and MAILSUPPORT_IMAP_PASSWORD)" in wrong.stderr
    [box] = json.loads(cli(env, "status", "--offline", "--json").stdout)["mailboxes"]
    assert box["name"] == "default" and box["last_error"].startswith("IMAP login to")
    right = cli({**env, "MAILSUPPORT_IMAP_PASSWORD": dovecot.users[SALES]}, "poll")
    assert right.exit_code == 0
    assert right.stdout.startswith("poll INBOX: read 0, new tickets 0,")
    assert "mailbox default" not in cli(env, "status", "--offline").stdout


# -- the daemon -------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_daemon_takes_the_mail_of_every_mailbox(
    dovecot: DovecotServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
    daemons: Any,
) -> None:
    file = mailboxes_file(tmp_path / "mailboxes.toml", dovecot)
    process = daemons(desk_env(env_for_cli, file, imap_poll_seconds="300"))
    process.wait_for_log("waiting for new mail", count=3)
    assert "watching 3 mailbox folders: sales, billing, refunds" in process.log
    ids = deliver_all(dovecot)
    wait_until(lambda: stored_ids(store) == ids, "the mail of all three stored")
    assert process.stop() == 0
    log = process.log
    for name in BOXES:
        assert f"INFO mailbox {name}: ticket #" in log
        assert f"INFO mailbox {name}: daemon stopped (SIGTERM)" in log
    assert f"<{mid(MESSAGE['refunds'])}> new" in log


@pytest.mark.slow
def test_a_wrong_password_or_a_server_down_holds_up_no_other_mailbox(
    dovecot: DovecotServer,
    env_for_cli: dict[str, str],
    store: Store,
    tmp_path: Path,
    daemons: Any,
) -> None:
    down = {"old": ("old@example.com", SALES, "INBOX")}
    file = mailboxes_file(tmp_path / "mailboxes.toml", dovecot, "billing", "old", down)
    env = desk_env(env_for_cli, file, imap_poll_seconds="300")
    process = daemons(env)
    process.wait_for_log("waiting for new mail", count=2)  # sales and refunds
    process.wait_for_log("mailbox billing: IMAP login to")
    process.wait_for_log("mailbox old: IMAP server 127.0.0.1:")
    ids = sorted(deliver(dovecot, name) for name in ("sales", "refunds"))
    wait_until(lambda: stored_ids(store) == ids, "the mail of sales and refunds stored")
    assert process.proc.poll() is None  # still running, trying billing again slowly
    assert "trying again every 300 s" in process.log  # MAILSUPPORT_IMAP_RETRY_MAX_SECONDS
    boxes = by_name(json.loads(cli(env, "status", "--offline", "--json").stdout))
    assert f"as {BILLING} failed" in boxes["billing"]["last_error"]
    assert "unreachable" in boxes["old"]["last_error"]
    assert boxes["sales"]["last_error"] == "" and boxes["sales"]["last_success_at"]
    assert process.stop() == 0
    assert "not-the-password-4711" not in process.log


@pytest.mark.slow
def test_the_daemon_exits_2_when_every_mailbox_is_misconfigured(
    dovecot: DovecotServer, env_for_cli: dict[str, str], tmp_path: Path, daemons: Any
) -> None:
    file = mailboxes_file(tmp_path / "mailboxes.toml", dovecot)
    for secret in dovecot.users.values():
        file.write_text(file.read_text().replace(json.dumps(secret), '"not-it"'))
    process = daemons(desk_env(env_for_cli, file))
    assert process.proc.wait(timeout=20) == 2
    line = process.log.strip().splitlines()[-1]
    assert line.startswith("mailsupport: every mailbox failed at startup: mailbox ")
    assert all(f"mailbox {name}: IMAP login" in line for name in BOXES)


def test_folder_locks_take_no_connection_from_the_pool(store: Store, settings: Any) -> None:
    """A daemon holds a folder lock per mailbox for its whole life: on PostgreSQL each is a
    connection of its own, and the pool (5 and 10 more by default) stays for the work."""
    from mailsupport.locks import Lock

    if store.engine.dialect.name != "postgresql":
        pytest.skip("file locks on SQLite hold no database connection")
    locks = [Lock(store, f"imap:box{i}@example.test/INBOX", settings.data_dir) for i in range(30)]
    try:
        assert all(lock.acquire() for lock in locks)
        assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        with store.read() as session:
            assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1
        assert all(lock.still_held() for lock in locks)
    finally:
        for lock in locks:
            lock.release()
