"""Operator checks: `status` (how intake is doing) and `doctor` (what is misconfigured)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import typer

from mailsupport.cli.app import app, print_json, state
from mailsupport.cli.render import local_time
from mailsupport.errors import MailSupportError

OPERATOR = "Operator"


@app.command("status", rich_help_panel=OPERATOR)
def status(
    ctx: typer.Context,
    offline: bool = typer.Option(
        False, "--offline", help="Do not ask the IMAP server how much mail is waiting."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Each mailbox's last poll and error, mail waiting on the server, quarantine, tickets.

    With a mailboxes file (MAILSUPPORT_MAILBOXES_FILE) each mailbox has its lines: its
    folder, last successful poll, messages waiting and the last error, if its last attempt
    failed. The servers are asked several at a time, unless --offline.

    Examples:
        mailsupport status
        mailsupport status --offline --json
    """
    from datetime import datetime

    from mailsupport.cli.render import terminal_text
    from mailsupport.mailboxes import load_mailboxes
    from mailsupport.status import desk_status

    st = state(ctx)
    settings = st.settings
    mailboxes = load_mailboxes(settings)
    report = desk_status(st.store(), settings, ask_server=not offline, mailboxes=mailboxes)
    if as_json:
        print_json(report)
        return
    if settings.mailboxes_file:
        _show_mailboxes(report)
    else:  # the one mailbox, as `status` always showed it
        _show_folders(report["folders"], settings.imap_host)
        _show_server(report.get("server"), "")
        [box] = report["mailboxes"]
        _show_error(box, "")
    for entry in report.get("sign_in", []):
        if "error" in entry:
            typer.echo(f"sign-in: {terminal_text(entry['error'], one_line=True)}")
            continue
        last = entry["signed_in_at"]
        when = local_time(datetime.fromisoformat(last)) if last else "never"
        typer.echo(f"sign-in {entry['login']}: {entry['state']}, last succeeded {when}")
        if entry["last_error"] and entry["state"] != "signed-in":
            typer.echo(f"  {terminal_text(entry['last_error'], one_line=True)}")
    o = report["outbox"]
    typer.echo(f"outbox: {o['queued']} waiting to be sent, {o['failed']} failed")
    q = report["quarantine"]
    typer.echo(f"quarantine: {q['messages']} messages, {q['bytes']} bytes")
    t = report["tickets"]
    typer.echo(
        f"tickets: {t['new']} new, {t['open']} open, {t['pending']} pending, {t['closed']} closed"
    )


def _when(value: str | None) -> str:
    from datetime import datetime

    return local_time(datetime.fromisoformat(value)) if value else "never"


def _show_folders(folders: list[dict[str, Any]], imap_host: str) -> None:
    from mailsupport.cli.render import terminal_text

    if not folders:
        typer.echo("mailbox: never polled" + ("" if imap_host else " (IMAP not set up)"))
    for f in folders:
        where = terminal_text(f"{f['account']}/{f['folder']}", one_line=True)
        typer.echo(f"mailbox {where}: last successful poll {_when(f['last_success_at'])}")


def _show_server(server: dict[str, Any] | None, indent: str) -> None:
    from mailsupport.cli.render import terminal_text

    if server is None:
        return
    if "error" in server:  # the server's own words
        shown = terminal_text(server["error"], one_line=True)
        typer.echo(f"{indent}waiting on the server: unknown ({shown})")
    else:
        typer.echo(f"{indent}waiting on the server: {server['waiting']} messages")
    if server.get("history_left"):
        typer.echo(
            f"{indent}older mail left on the server: {server['history_left']} messages "
            "(`mailsupport poll --all` or `--since DATE` takes them)"
        )


def _show_error(box: dict[str, Any], indent: str) -> None:
    from mailsupport.cli.render import terminal_text

    if box["last_error"]:
        shown = terminal_text(box["last_error"], one_line=True)
        typer.echo(f"{indent}last error, {_when(box['last_error_at'])}: {shown}")


def _show_mailboxes(report: dict[str, Any]) -> None:
    """Each mailbox of the file, then the folders polled before that no mailbox names now."""
    from mailsupport.cli.render import terminal_text

    shown: set[tuple[str, str]] = set()
    for box in report["mailboxes"]:
        head = terminal_text(f"mailbox {box['name']} <{box['address']}>", one_line=True)
        if not box["polled"]:
            typer.echo(f"{head}: not polled (no IMAP server; its mail comes by `ingest`)")
            continue
        shown.add((box["account"], box["folder"]))
        where = terminal_text(f"{box['account']}/{box['folder']}", one_line=True)
        typer.echo(f"{head}, {where}: last successful poll {_when(box['last_success_at'])}")
        if "server" in box:
            _show_server(box["server"], "  ")
        elif box["waiting"] is not None:
            typer.echo(f"  waiting: {box['waiting']} messages at the last poll")
        _show_error(box, "  ")
    others = [f for f in report["folders"] if (f["account"], f["folder"]) not in shown]
    for f in others:
        where = terminal_text(f"{f['account']}/{f['folder']}", one_line=True)
        last = _when(f["last_success_at"])
        typer.echo(f"folder {where}: last successful poll {last} (no mailbox polls it now)")


@app.command("doctor", rich_help_panel=OPERATOR)
def doctor(ctx: typer.Context) -> None:
    """Check settings, data, database, templates, rules, KB, IMAP, SMTP; say how to fix them.

    With a mailboxes file (MAILSUPPORT_MAILBOXES_FILE) it reads the file, and checks each
    mailbox's IMAP server, and its SMTP server when it has one of its own, naming the
    mailbox in each line.

    Exit 0 when everything works, 1 when something needs fixing.

    Examples:
        mailsupport doctor
        mailsupport --config /etc/mailsupport/settings.env doctor
    """
    from mailsupport.cli.render import terminal_text

    st = state(ctx)
    st.check_mailboxes = False  # a bad mailboxes file is one of the FAIL lines below
    settings = st.settings  # an invalid setting already stopped us with exit 2
    failures = 0

    def check(label: str, probe: Callable[[], str]) -> None:
        nonlocal failures
        # Details quote servers' replies (IMAP, SMTP, the database): cleaned for the terminal.
        try:
            detail = terminal_text(probe(), one_line=True)
        except MailSupportError as error:
            failures += 1
            typer.echo(f"FAIL  {label}: {terminal_text(str(error), one_line=True)}")
        except Exception as error:  # report, don't crash: the point is to see everything
            failures += 1
            shown = terminal_text(f"{type(error).__name__}: {error}", one_line=True)
            typer.echo(f"FAIL  {label}: {shown}")
        else:
            typer.echo(f"ok    {label}" + (f": {detail}" if detail else ""))

    typer.echo("ok    settings" + (f" from {st.config_path}" if st.config_path else ""))
    check("support address", lambda: _check_support_address(settings))
    check("data directory", lambda: _check_data_dir(settings.data_dir, settings.db_url))
    check("database", lambda: _check_database(st))
    check("templates", lambda: _check_templates(settings.templates_path))
    if settings.rules_file:
        check("rules", lambda: _check_rules(settings.rules_file))
    if settings.kb_dir:
        check("knowledge base", lambda: _check_kb(settings.kb_dir))
    boxes = None
    if settings.mailboxes_file:
        from mailsupport.mailboxes import load_mailboxes

        try:
            boxes = load_mailboxes(settings).all
        except MailSupportError as error:  # names the file, the line and the key
            failures += 1
            typer.echo(f"FAIL  mailboxes: {terminal_text(str(error), one_line=True)}")
        else:
            names = ", ".join(box.name for box in boxes)
            typer.echo(terminal_text(f"ok    mailboxes: {len(boxes)} ({names})", one_line=True))
    if boxes is None:  # the desk's own settings: the one mailbox
        if settings.imap_host:
            check("IMAP", lambda: _check_imap(settings))
        else:
            typer.echo("skip  IMAP: MAILSUPPORT_IMAP_HOST is not set (poll and daemon need it)")
    else:
        polled = [box for box in boxes if box.polled]
        found = _at_once([partial(_check_imap, box.settings) for box in polled])
        for box, probe in zip(polled, found, strict=True):
            check(f"IMAP, mailbox {box.name}", probe)
        for box in boxes:
            if not box.polled:
                typer.echo(f"skip  IMAP, mailbox {box.name}: no imap_host (mail comes by `ingest`)")
    if settings.smtp_host:
        check("SMTP", lambda: _check_smtp(settings))
    else:
        typer.echo("skip  SMTP: MAILSUPPORT_SMTP_HOST is not set (no mail can be sent)")
    own = [box for box in boxes or () if box.settings.smtp_host and _own_smtp(box, settings)]
    sent = _at_once([partial(_check_smtp, box.settings) for box in own])
    for box, probe in zip(own, sent, strict=True):
        check(f"SMTP, mailbox {box.name}", probe)
    if failures:
        typer.echo(f"{failures} problem(s) found")
        raise typer.Exit(1)
    typer.echo("all checks passed")


def _at_once(probes: list[Callable[[], str]]) -> list[Callable[[], str]]:
    """Run the probes several at a time (a server that does not answer delays no other);
    for each, a probe that gives its outcome again, for check() to report in order."""
    from concurrent.futures import ThreadPoolExecutor

    def settle(probe: Callable[[], str]) -> tuple[str, BaseException | None]:
        try:
            return probe(), None
        except Exception as error:  # check() reports it
            return "", error

    def again(outcome: tuple[str, BaseException | None]) -> Callable[[], str]:
        def probe() -> str:
            if outcome[1] is not None:
                raise outcome[1]
            return outcome[0]

        return probe

    if not probes:
        return []
    with ThreadPoolExecutor(min(8, len(probes)), "doctor") as pool:
        return [again(outcome) for outcome in pool.map(settle, probes)]


def _own_smtp(box: Any, desk: Any) -> bool:
    """Whether the mailbox sends through SMTP settings of its own, not the desk's."""
    keys = {k for k in type(desk).model_fields if k.startswith(("smtp_", "oauth_"))}
    return bool(box.settings.model_dump(include=keys) != desk.model_dump(include=keys))


def _check_support_address(settings: Any) -> str:
    from mailsupport.errors import ConfigError

    if not settings.support_address:
        raise ConfigError(
            "MAILSUPPORT_SUPPORT_ADDRESS is not set: set it to the address customers write to "
            "(acknowledgements and replies are sent from it)"
        )
    return str(settings.support_address)


def _check_data_dir(path: Path, db_url: str) -> str:
    """Writable, free space, and closed to other users: the data directory, and the
    directory of a SQLite database kept elsewhere."""
    from sqlalchemy.engine import make_url

    from mailsupport.errors import ConfigError
    from mailsupport.store.files import private_dir

    try:
        private_dir(path)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-") as handle:
            handle.write(b"x")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise ConfigError(
            f"{path} is not writable ({error.strerror}); fix its permissions "
            "or point MAILSUPPORT_DATA_DIR elsewhere"
        ) from None
    directories = [path]
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        elsewhere = Path(url.database).parent
        if elsewhere.is_dir() and not elsewhere.samefile(path):
            directories.append(elsewhere)
    for directory in directories:
        exposed = _open_to_others(directory)
        if exposed:
            raise ConfigError(
                f"{directory} is open to other users: {', '.join(exposed)}; run "
                f"`chmod -R o-rwx {directory}` (mailsupport creates its files 0600 in "
                "0700 directories, but leaves the modes it finds as they are)"
            )
    free = os.statvfs(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    shared = f", shared with its group ({mode:04o})" if mode & 0o070 else ""
    return f"{path.resolve()}{shared}, {free.f_bavail * free.f_frsize // 2**20} MiB free"


def _open_to_others(directory: Path, shown: int = 4) -> list[str]:
    """What in `directory` other users (not the owner, not the group) can get at: the
    directory itself and the entries in it that give them any permission. Nothing when the
    directory lets them in nowhere, whatever the modes inside."""
    mode = directory.stat().st_mode
    if not mode & 0o007:
        return []
    found = [f"the directory ({stat.filemode(mode)})"]
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            entry_mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(entry_mode) or not entry_mode & 0o007:
                continue
            if len(found) > shown:
                found.append("...")
                break
            found.append(f"{entry.name} ({stat.filemode(entry_mode)})")
    return found


def _check_database(st: Any) -> str:
    from sqlalchemy.engine import make_url

    from mailsupport.store.db import SCHEMA_REVISION

    store = st.store(check_schema=False)
    current = store.current_revision()
    url = make_url(st.settings.db_url).render_as_string(hide_password=True)
    if current == SCHEMA_REVISION:
        return f"{url}, schema {current}"
    if current == "":
        return f"{url}, empty: it is created on first use (or run `mailsupport db upgrade`)"
    store.ensure_schema()  # raises the one-line explanation
    return url


def _check_templates(directory: Any) -> str:
    from mailsupport.errors import ConfigError
    from mailsupport.macros import check_macros
    from mailsupport.templating import check_templates

    problems = check_templates(directory) + check_macros(directory)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return f"{directory} over the built-in ones" if directory else "built-in"


def _check_rules(path: str) -> str:
    from pathlib import Path

    from mailsupport.rules import load_rules

    return f"{path}, {len(load_rules(Path(path)))} rules"


def _check_kb(directory: str) -> str:
    from mailsupport.errors import ConfigError
    from mailsupport.kb import check_kb

    problems = check_kb(directory)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return directory


def _check_smtp(settings: Any) -> str:
    from mailsupport.outbox.smtp import check_smtp

    return "; ".join([check_smtp(settings), *_token_note(settings, "smtp")])


def _token_note(settings: Any, service: Any) -> list[str]:
    """How the service signed in, when with OAuth2, and until when its token is valid."""
    from mailsupport.cli.render import local_time
    from mailsupport.oauth.tokens import keeper

    found = keeper(settings, service)
    if found is None:
        return []
    until = local_time(found.expires_at)
    return [f"signed in with {found.account.describe}, token valid until {until}"]


def _check_imap(settings: Any) -> str:
    from mailsupport.errors import ConfigError
    from mailsupport.imapconn import connect

    client = connect(settings)
    try:
        missing = [
            name for name in (settings.imap_folder,) if name and not client.folder_exists(name)
        ]
        if missing:
            raise ConfigError(
                f"folder {missing[0]!r} does not exist on the server "
                "(check MAILSUPPORT_IMAP_FOLDER)"
            )
        notes = []
        for key, name in (
            ("IMAP_PROCESSED_FOLDER", settings.imap_processed_folder),
            ("IMAP_QUARANTINE_FOLDER", settings.imap_quarantine_folder),
        ):
            if name and not client.folder_exists(name):
                notes.append(f"{name} ({key}) will be created on first use")
        capabilities = {c.decode().upper() for c in client.capabilities()}
        offered = [c for c in ("IDLE", "MOVE", "UIDPLUS") if c in capabilities]
        offers = ", ".join(offered) or "none of IDLE, MOVE, UIDPLUS"
        detail = f"logged in to {settings.imap_account}, server offers {offers}"
        return "; ".join([detail, *notes, *_token_note(settings, "imap")])
    finally:
        with contextlib.suppress(Exception):
            client.logout()
