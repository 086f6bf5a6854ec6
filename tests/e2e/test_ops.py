"""`mailsupport status` and `mailsupport doctor` against a real store and IMAP server."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mailsupport.cli import app
from tests.support.mailboxes import imap_env, mail


def invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


@pytest.mark.slow
def test_status_reports_polls_waiting_mail_quarantine_and_tickets(
    imap_server, env_for_cli, store
) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server, imap_start="all")
    imap_server.append(mail(1))
    imap_server.append(b"\x00\x01 junk")
    invoke(env, "poll")
    imap_server.append(mail(2))
    imap_server.append(mail(3))

    report = json.loads(invoke(env, "status", "--json").output)
    [folder] = report["folders"]
    assert folder["folder"] == "INBOX"
    assert folder["last_success_at"] is not None
    assert report["server"] == {"waiting": 2, "history_left": 0}  # IMAP_START=all took it
    assert report["quarantine"]["messages"] == 1
    assert report["quarantine"]["bytes"] == len(b"\x00\x01 junk")
    assert report["tickets"]["new"] == 1
    assert report["outbox"] == {"queued": 0, "failed": 0}

    text = invoke(env, "status").output
    assert "last successful poll" in text
    assert "waiting on the server: 2 messages" in text
    assert "quarantine: 1 messages" in text
    assert "outbox: 0 waiting to be sent, 0 failed" in text

    offline = json.loads(invoke(env, "status", "--offline", "--json").output)
    assert "server" not in offline


def test_status_when_the_server_is_down(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server)
    imap_server.kill()
    result = invoke(env, "status")
    assert result.exit_code == 0
    assert "waiting on the server: unknown (IMAP server" in result.output


def test_doctor_passes_on_a_working_setup(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server, imap_processed_folder="Done")
    result = invoke(env, "doctor")
    assert result.exit_code == 0, result.output
    assert "ok    IMAP: logged in to" in result.output
    assert "IDLE" in result.output
    assert "Done (IMAP_PROCESSED_FOLDER) will be created" in result.output
    assert result.output.strip().endswith("all checks passed")


@pytest.mark.slow
def test_doctor_names_each_problem(imap_server, env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = imap_env(env_for_cli, imap_server, imap_folder="Missing")
    result = invoke(env, "doctor")
    assert result.exit_code == 1
    assert "FAIL  IMAP: folder 'Missing' does not exist" in result.output
    wrong = invoke({**env, "MAILSUPPORT_IMAP_PASSWORD": "wrong"}, "doctor")
    assert "MAILSUPPORT_IMAP_PASSWORD" in wrong.output
    assert "Traceback" not in wrong.output


def test_doctor_reports_a_schema_that_is_behind(env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    result = invoke(env_for_cli, "doctor")
    assert result.exit_code == 1
    assert "FAIL  database:" in result.output and "mailsupport db upgrade" in result.output


def test_doctor_reports_a_broken_template(env_for_cli, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    custom = tmp_path / "my-templates"
    custom.mkdir()
    (custom / "ack.en.txt").write_text("Hello {{ customer_name }},\nticket {{ tikcet_number }}\n")
    result = invoke({**env_for_cli, "MAILSUPPORT_TEMPLATES_DIR": str(custom)}, "doctor")
    assert result.exit_code == 1
    line = next(x for x in result.output.splitlines() if x.startswith("FAIL  templates"))
    assert "ack.en.txt" in line and "tikcet_number" in line
    fine = invoke(env_for_cli, "doctor")
    assert "ok    templates: built-in" in fine.output


def test_doctor_checks_smtp_when_configured(env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    from tests.support.smtpserver import SmtpServer

    assert "skip  SMTP" in invoke(env_for_cli, "doctor").output
    server = SmtpServer()
    server.start()
    try:
        env = {
            **env_for_cli,
            "MAILSUPPORT_SMTP_HOST": server.host,
            "MAILSUPPORT_SMTP_PORT": str(server.port),
            "MAILSUPPORT_SMTP_SECURITY": "none",
        }
        ok = invoke(env, "doctor")
        assert f"ok    SMTP: connected to {server.host}:{server.port} (none)" in ok.output
        tls = invoke({**env, "MAILSUPPORT_SMTP_SECURITY": "starttls"}, "doctor")
        assert tls.exit_code == 1
        assert "FAIL  SMTP:" in tls.output and "MAILSUPPORT_SMTP_SECURITY" in tls.output
    finally:
        server.stop()
    down = invoke(env, "doctor")
    assert "FAIL  SMTP: cannot connect to" in down.output


def test_doctor_checks_the_rules_file_and_the_knowledge_base(env_for_cli, store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "a"\nif.subject = "x"\nthen.queue = "q"\n')
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("---\ntitle: A\n---\nBody\n")
    env = {**env_for_cli, "MAILSUPPORT_RULES_FILE": str(rules), "MAILSUPPORT_KB_DIR": str(kb)}
    good = invoke(env, "doctor")
    assert f"ok    rules: {rules}, 1 rules" in good.output
    assert f"ok    knowledge base: {kb}" in good.output
    rules.write_text('[[rule]]\nname = "a"\nif.subjct = "x"\nthen.queue = "q"\n')
    (kb / "b.md").write_text("no header here\n")
    bad = invoke(env, "doctor")
    assert bad.exit_code == 1
    assert "FAIL  rules: " in bad.output and "line 3: unknown condition 'subjct'" in bad.output
    assert "FAIL  knowledge base: " in bad.output and "b.md" in bad.output


def test_doctor_without_a_support_address_is_not_all_well(env_for_cli, store) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in env_for_cli.items() if k != "MAILSUPPORT_SUPPORT_ADDRESS"}
    result = invoke(env, "doctor")
    assert result.exit_code == 1
    assert "FAIL  support address: MAILSUPPORT_SUPPORT_ADDRESS is not set" in result.output
    assert "all checks passed" not in result.output
    assert "ok    support address: support@example.com" in invoke(env_for_cli, "doctor").output


def test_status_as_plain_data_for_scripts(settings, store) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from mailsupport.desk import Desk
    from mailsupport.pipeline import Incoming, Outcome, Pipeline
    from mailsupport.status import desk_status
    from tests.support.mailfactory import make_message

    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    with Pipeline(settings.model_copy(update={"max_message_bytes": 1000}), store) as pipeline:
        raws = [make_message("a@x.example.org"), make_message("b@x.example.org", body="x" * 2000)]
        outcomes: list[Outcome] = []
        pipeline.run((Incoming(r, "test", now) for r in raws), lambda: now, on_each=outcomes.append)
    number = outcomes[0].ticket_number
    assert number is not None
    Desk(store, settings, "olga", lambda: now).close(number)

    report = desk_status(store, settings)
    assert report == {
        "mailboxes": [
            {
                "name": "default",
                "address": "support@example.com",
                "polled": False,
                "account": None,
                "folder": None,
                "last_poll_at": None,
                "last_success_at": None,
                "waiting": None,
                "last_error": "",
                "last_error_at": None,
            }
        ],  # one mailbox, from the settings: no mailboxes file
        "folders": [],
        "quarantine": {"messages": 1, "bytes": len(raws[1])},
        "outbox": {"queued": 0, "failed": 0},
        "tickets": {"new": 0, "open": 0, "pending": 0, "closed": 1},
    }  # no "server": IMAP is not set up
