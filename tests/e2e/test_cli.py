"""The command line, through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from mailsupport.cli import app
from tests.support.mailfactory import BASE_TIME, mailing_list_archive, make_message, mbox_file
from tests.support.paths import ROOT
from tests.support.processes import mailsupport_process


@pytest.mark.slow
def test_import_an_mbox_then_list_show_export(run, env_for_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A mailing list's archive: anyone on the list may answer anyone (see README, Security).
    env_for_cli["MAILSUPPORT_STRANGER_REPLIES"] = "join"
    messages, conversations = mailing_list_archive(threads=4, seed=5)
    box = mbox_file(tmp_path / "archive.mbox", *messages)

    result = run("import", str(box))
    assert result.exit_code == 0, result.output
    replies = len(messages) - len(conversations)
    assert result.output.strip().endswith(
        f"read {len(messages)}, new tickets {len(conversations)}, threaded replies {replies}, "
        "duplicates 0, quarantined 0"
    )

    again = run("import", str(box))  # nothing new: the file is not read again
    assert f"{box}: all {len(messages)} messages imported before" in again.output
    assert "read 0, new tickets 0" in again.output
    assert f"skipped {len(messages)} already imported" in again.output
    restarted = run("import", "--restart", str(box))
    assert f"read {len(messages)}, new tickets 0" in restarted.output
    assert f"duplicates {len(messages)}" in restarted.output

    listed = json.loads(run("list", "--json").output)
    assert len(listed) == len(conversations)
    assert sum(t["messages"] for t in listed) == len(messages)
    table = run("list").output
    assert table.splitlines()[0].split()[:3] == ["#", "STATUS", "UPDATED"]

    number = listed[0]["number"]
    shown = json.loads(run("show", str(number), "--json").output)
    assert shown["number"] == number
    assert shown["messages"][0]["direction"] == "in"
    text = run("show", str(number)).output
    assert f"#{number}" in text
    assert shown["messages"][0]["text"].splitlines()[0] in text

    lines = run("export").output.splitlines()
    assert len(lines) == len(conversations)
    exported = [json.loads(line) for line in lines]
    for field in ("id", "number", "subject", "status", "requester", "created_at", "updated_at"):
        assert field in exported[0]
    message = exported[0]["messages"][0]
    for field in ("message_id", "direction", "from", "to", "cc", "subject", "date", "text"):
        assert field in message
    assert "<" not in message["message_id"]
    assert message["date"].endswith("+00:00")
    ids = {m["message_id"] for t in exported for m in t["messages"]}
    assert len(ids) == len(messages)


def test_export_lists_attachments(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = make_message("att@x.example.org", attachments=[("отчёт.txt", "text/plain", b"data\n")])
    (tmp_path / "one.eml").write_bytes(raw)
    assert run("import", str(tmp_path / "one.eml")).exit_code == 0
    [line] = run("export").output.splitlines()
    [attachment] = json.loads(line)["messages"][0]["attachments"]
    assert attachment["filename"] == "отчёт.txt"
    assert attachment["size"] == 5
    assert attachment["content_type"] == "text/plain"
    assert len(attachment["sha256"]) == 64


def test_import_refuses_a_bad_path_and_writes_nothing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.eml"
    good.write_bytes(make_message())
    result = run("import", str(good), str(tmp_path / "missing.mbox"))
    assert result.exit_code == 1
    assert "missing.mbox" in result.output
    assert "Traceback" not in result.output
    assert json.loads(run("list", "--json").output) == []


def test_import_refuses_a_file_that_is_not_mail(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    result = run("import", str(junk))
    assert result.exit_code == 1
    assert "photo.jpg" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_quarantine_list_show_retry(run, tmp_path: Path, env_for_cli) -> None:  # type: ignore[no-untyped-def]
    big = make_message("big@x.example.org", body="y" * 5000)
    (tmp_path / "big.eml").write_bytes(big)
    small_env = {**env_for_cli, "MAILSUPPORT_MAX_MESSAGE_BYTES": "1000"}
    result = CliRunner().invoke(app, ["import", str(tmp_path / "big.eml")], env=small_env)
    assert "quarantined 1" in result.output

    [entry] = json.loads(run("quarantine", "list", "--json").output)
    assert "MAILSUPPORT_MAX_MESSAGE_BYTES" in entry["error"]
    assert entry["size"] == len(big)
    assert entry["origin"].endswith("big.eml")
    assert "MAILSUPPORT_MAX_MESSAGE_BYTES" in run("quarantine", "list").output

    shown = run("quarantine", "show", str(entry["id"]))
    assert "Message-ID: <big@x.example.org>" in shown.output
    raw = run("quarantine", "show", str(entry["id"]), "--raw")
    assert raw.stdout_bytes == big

    assert run("quarantine", "retry").exit_code == 2
    missing = run("quarantine", "retry", "999")
    assert missing.exit_code == 1 and "no quarantine entry 999" in missing.output

    retried = run("quarantine", "retry", "--all")  # default limit is 25 MiB
    assert retried.exit_code == 0, retried.output
    assert "new tickets 1" in retried.output
    assert run("quarantine", "list", "--json").output.strip() == "[]"


def test_failed_retry_counts_and_exits_1(run, tmp_path: Path, env_for_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "big.eml").write_bytes(make_message(body="z" * 5000))
    small_env = {**env_for_cli, "MAILSUPPORT_MAX_MESSAGE_BYTES": "1000"}
    runner = CliRunner()
    runner.invoke(app, ["import", str(tmp_path / "big.eml")], env=small_env)
    result = runner.invoke(app, ["quarantine", "retry", "1"], env=small_env)
    assert result.exit_code == 1
    [entry] = json.loads(run("quarantine", "list", "--json").output)
    assert entry["retry_count"] == 1
    assert entry["last_retry_at"] is not None


def test_show_unknown_ticket(run) -> None:  # type: ignore[no-untyped-def]
    result = run("show", "42")
    assert result.exit_code == 1
    assert result.output.strip() == "mailsupport: no ticket #42 (see `mailsupport list`)"


def test_list_rejects_an_unknown_status(run) -> None:  # type: ignore[no-untyped-def]
    result = run("list", "--status", "solved")
    assert result.exit_code == 2
    assert "unknown status 'solved'" in result.output


def test_invalid_setting_is_one_line_and_exit_2(env_for_cli) -> None:  # type: ignore[no-untyped-def]
    env = {**env_for_cli, "MAILSUPPORT_MAX_MESSAGE_BYTES": "huge"}
    result = CliRunner().invoke(app, ["list"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().startswith(
        "mailsupport: invalid setting MAILSUPPORT_MAX_MESSAGE_BYTES"
    )
    assert len(result.output.strip().splitlines()) == 1


def test_commands_refuse_an_old_schema_until_upgraded(run, settings) -> None:  # type: ignore[no-untyped-def]
    from mailsupport.store.db import SCHEMA_REVISION

    upgraded = run("db", "upgrade").output
    assert upgraded.startswith(f"database schema upgraded from empty to {SCHEMA_REVISION}")
    engine = sa.create_engine(settings.db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    refused = run("list")
    assert refused.exit_code == 2
    assert "run `mailsupport db upgrade`" in refused.output
    status = run("db", "status")
    assert status.exit_code == 1 and "0000" in status.output
    assert run("db", "upgrade").exit_code == 2  # an unknown revision is not guessed at


def test_every_command_has_help(run) -> None:  # type: ignore[no-untyped-def]
    import typer.main

    group = typer.main.get_command(app)

    def walk(command, path: list[str]):  # type: ignore[no-untyped-def]
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    readme = (ROOT / "README.md").read_text()
    for path, command in walk(group, []):
        assert command.help, f"{' '.join(path)} has no help text"
        assert f"mailsupport {' '.join(path)}" in readme, f"{' '.join(path)} missing from README"


# -- real subprocesses: the console entry point, stdin, exit codes ------------------------------


@pytest.mark.slow
def test_ingest_from_stdin_as_an_mta_pipe(env_for_cli) -> None:  # type: ignore[no-untyped-def]
    first = mailsupport_process(env_for_cli, "ingest", stdin=make_message("pipe1@x.example.org"))
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode().startswith("ticket #1")
    reply = make_message("pipe2@x.example.org", in_reply_to="<pipe1@x.example.org>", date=BASE_TIME)
    second = mailsupport_process(env_for_cli, "ingest", stdin=reply)
    assert second.returncode == 0 and second.stdout.decode().startswith("ticket #1")
    again = mailsupport_process(env_for_cli, "ingest", stdin=reply)
    assert again.returncode == 0 and b"duplicate" in again.stdout
    garbage = mailsupport_process(env_for_cli, "ingest", stdin=b"\x00\x00 not mail")
    assert garbage.returncode == 0 and garbage.stdout.startswith(b"quarantined")
    empty = mailsupport_process(env_for_cli, "ingest", stdin=b"")
    assert empty.returncode == 2 and b"no message on standard input" in empty.stderr


@pytest.mark.slow
def test_ingest_exits_75_when_the_database_is_unreachable(env_for_cli) -> None:  # type: ignore[no-untyped-def]
    env = {
        **env_for_cli,
        "MAILSUPPORT_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    result = mailsupport_process(env, "ingest", stdin=make_message())
    assert result.returncode == 75
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailsupport: database unavailable")


def test_console_help_lists_agent_and_operator_commands() -> None:
    result = mailsupport_process({}, "--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    for name in ("list", "show", "export", "import", "ingest", "quarantine", "db"):
        assert name in out


@pytest.mark.slow
def test_an_unparseable_database_url_is_a_configuration_error(env_for_cli) -> None:  # type: ignore[no-untyped-def]
    env = {**env_for_cli, "MAILSUPPORT_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:54x2/db"}
    result = CliRunner().invoke(app, ["list"], env=env)
    assert result.exit_code == 2
    assert result.output.startswith("mailsupport: invalid setting MAILSUPPORT_DATABASE_URL")
