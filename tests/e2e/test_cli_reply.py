"""`reply` for a working day: the status a reply leaves (MAILSUPPORT_REPLY_STATUS), canned
replies (`--macro`, `macro list/show`), the greeting and signature shown in the editor, and
messages that arrive while the agent writes. No SMTP server: what a reply says is read back
from the store, where it is kept as sent."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlmodel import col, select

from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem
from tests.support.cli import Run
from tests.support.desk import ticket_of
from tests.support.mailfactory import make_message

MARKER = "# ------------------------ >8 ------------------------"
AGENT = {"MAILSUPPORT_AGENT": "Maria", "MAILSUPPORT_ACK_LIMIT": "0"}


def ingest(run: Run, message_id: str, **kwargs: object) -> int:
    """A customer's mail through `ingest`; its ticket's number."""
    done = run("ingest", input=make_message(message_id, **kwargs), env=AGENT)  # type: ignore[arg-type]
    assert done.exit_code == 0, done.output
    return int(done.stdout.split("#", 1)[1].split(":")[0])  # "ticket #12: ..."


def status(run: Run, number: int) -> str:
    return str(json.loads(run("show", str(number), "--json").stdout)["status"])


def replies(store: Store) -> list[Message]:
    """Our replies as stored (the text exactly as mailed), oldest first."""
    with store.read() as session:
        query = select(Message).where(Message.direction == "out").order_by(col(Message.id))
        return list(session.exec(query).all())


def queued(store: Store) -> int:
    with store.read() as session:
        return len(session.exec(select(OutboxItem)).all())


# ------------------------------------------------------------------------------------------
# MAILSUPPORT_REPLY_STATUS
# ------------------------------------------------------------------------------------------


def test_a_reply_leaves_the_ticket_pending_and_the_customers_answer_opens_it(
    run: Run, store: Store
) -> None:
    number = ingest(run, "q1@customer.example.org")
    done = run("reply", str(number), "-m", "Please try again now.", env=AGENT)
    assert done.exit_code == 0, done.output
    assert f"ticket #{number}: reply queued as <" in done.stdout
    assert done.stdout.splitlines()[1].endswith(", pending")
    assert status(run, number) == "pending"

    [ours] = replies(store)
    ingest(run, "q2@customer.example.org", subject="Re: Cannot log in",
           in_reply_to=ours.message_id, body="Still broken.")  # fmt: skip
    assert status(run, number) == "open"  # the customer answered: back to the agents


@pytest.mark.parametrize(
    ("setting", "flags", "expected"),
    [
        ("open", [], "open"),
        ("closed", [], "closed"),
        ("pending", ["--open"], "open"),
        ("open", ["--pending"], "pending"),
        ("open", ["--close"], "closed"),
        ("CLOSED", ["--open"], "open"),
    ],
)
def test_the_setting_says_the_status_and_the_agents_flag_wins(
    setting: str, flags: list[str], expected: str, run: Run
) -> None:
    number = ingest(run, "q1@customer.example.org")
    env = {**AGENT, "MAILSUPPORT_REPLY_STATUS": setting}
    done = run("reply", str(number), "-m", "Done.", *flags, env=env)
    assert done.exit_code == 0, done.output
    assert status(run, number) == expected


def test_a_closed_ticket_stays_closed_unless_the_agent_says(run: Run) -> None:
    number = ingest(run, "q1@customer.example.org")
    assert run("close", str(number), "--silent", env=AGENT).exit_code == 0
    assert run("reply", str(number), "-m", "One more thing.", env=AGENT).exit_code == 0
    assert status(run, number) == "closed"
    assert run("reply", str(number), "-m", "Reopened.", "--pending", env=AGENT).exit_code == 0
    assert status(run, number) == "pending"


def test_each_mailbox_may_choose_its_reply_status(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "mailboxes.toml"
    path.write_text(
        '[[mailbox]]\nname = "support"\naddress = "support@example.com"\n\n'
        '[[mailbox]]\nname = "sales"\naddress = "sales@example.com"\nreply_status = "open"\n'
    )
    env = {**AGENT, "MAILSUPPORT_MAILBOXES_FILE": str(path)}
    support = run("ingest", input=make_message("s1@customer.example.org"), env=env)
    sales = run("ingest", input=make_message("s2@c.example.org", to="sales@example.com"), env=env)
    for number in (1, 2):
        assert run("reply", str(number), "-m", "Answered.", env=env).exit_code == 0
    assert (support.exit_code, sales.exit_code) == (0, 0)
    assert [status(run, 1), status(run, 2)] == ["pending", "open"]

    path.write_text(path.read_text().replace('reply_status = "open"', 'reply_status = "later"'))
    bad = run("list", env=env)
    assert bad.exit_code == 2 and "line 8, mailbox 2, reply_status" in bad.output


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["-m", "x", "--open", "--close"], {}, "choose one of --close, --pending and --open"),
        (["-m", "x"], {"MAILSUPPORT_REPLY_STATUS": "later"}, "MAILSUPPORT_REPLY_STATUS"),
    ],
)
def test_reply_status_mistakes_are_one_line_usage_errors(
    args: list[str], env: dict[str, str], words: str, run: Run, store: Store
) -> None:
    number = ingest(run, "q1@customer.example.org")
    done = run("reply", str(number), *args, env={**AGENT, **env})
    assert done.exit_code == 2 and words in done.output
    assert len(done.output.strip().splitlines()) == 1 and queued(store) == 0


# ------------------------------------------------------------------------------------------
# Macros
# ------------------------------------------------------------------------------------------


def test_a_macro_is_filled_in_for_the_ticket_and_sent_inside_the_template(
    run: Run, store: Store
) -> None:
    number = ingest(run, "q1@customer.example.org", subject="Printer offline")
    done = run("reply", str(number), "--macro", "need-more-info", "-m", "", env=AGENT)
    assert done.exit_code == 0, done.output
    text = replies(store)[0].text
    assert text.startswith("Hello Anna Petrova,\n\nThank you for telling us about")
    assert '"Printer offline"' in text and f"your request [#{number}]." in text
    assert "{" not in text and "Need more information:" not in text  # the title is no text
    assert "\n-- \nMaria\n" in text  # the template's signature, once


def test_a_macro_follows_the_agents_text_and_comes_before_articles(run: Run, store: Store) -> None:
    number = ingest(run, "q1@customer.example.org", body="Здравствуйте! Не могу войти.")
    env = {**AGENT, "MAILSUPPORT_KB_DIR": str(Path(__file__).parents[2] / "kb")}
    done = run(
        "reply", str(number), "-m", "Извините за ожидание.", "--macro", "password-reset",
        "--kb", "vpn-login-ru", env=env,
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    text = replies(store)[0].text
    mine, macro, article = (
        text.index("Извините за ожидание."),
        text.index("Новый пароль можно задать самостоятельно"),  # Russian, as the customer
        text.index("Не подключается VPN"),
    )
    assert mine < macro < article
    assert "(вероятно, anna@customer.example.org)" in text


def test_macros_in_the_templates_directory_replace_and_add_to_the_built_in_ones(
    run: Run, store: Store, tmp_path: Path
) -> None:
    mine = tmp_path / "templates" / "macros"
    mine.mkdir(parents=True)
    (mine / "password-reset.en.md").write_text("{# Ours #}\nCall {{ support.address }}.\n")
    (mine / "refund.md").write_text(
        # A line of only a tag leaves no newline: the blank line after it ends the first.
        "{% include '_thanks.md' %}\n\nPriority {{ ticket.priority }}, {{ agent.name }}.\n"
    )
    (mine / "_thanks.md").write_text("Thanks, {{ customer.name or 'friend' }}!")
    (mine / "notes.txt").write_text("not a macro")
    env = {**AGENT, "MAILSUPPORT_TEMPLATES_DIR": str(tmp_path / "templates")}

    listed = run("macro", "list", env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["need-more-info", "password-reset", "refund"]
    assert lines[1].split()[1:] == ["en", "ru", "Ours"]  # the English title: ours
    assert lines[2].split()[1] == "*"
    rows = json.loads(run("macro", "list", "--json", env=env).stdout)
    assert {(r["name"], r["language"], r["path"] is None) for r in rows} >= {
        ("password-reset", "en", False), ("password-reset", "ru", True), ("refund", None, False)
    }  # fmt: skip

    number = ingest(run, "q1@customer.example.org")
    shown = run("macro", "show", "refund", str(number), "--as", "Oleg", env=env)
    assert shown.stdout == "Thanks, Anna Petrova!\nPriority normal, Oleg.\n"
    assert run("macro", "show", "password-reset", env=env).stdout.startswith(
        f"==> {mine / 'password-reset.en.md'} <==\n{{# Ours #}}\nCall"
    )
    done = run("reply", str(number), "--macro", "password-reset", "-m", "", env=env)
    assert done.exit_code == 0, done.output
    assert "Call support@example.com." in replies(store)[0].text


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("Hello {{ customer.nmae }}", "password-reset.en.md, line 1: 'dict object' has no"),
        ("Fine\n{% if ticket.number %}", "password-reset.en.md, line 2: syntax error"),
    ],
)
def test_unknown_and_broken_macros_are_one_line_and_send_nothing(
    source: str, words: str, run: Run, store: Store, tmp_path: Path
) -> None:
    number = ingest(run, "q1@customer.example.org")
    unknown = run("reply", str(number), "--macro", "nope", "-m", "", env=AGENT)
    assert unknown.exit_code == 2
    assert unknown.output == ("mailsupport: no macro named 'nope' (see `mailsupport macro list`)\n")
    assert run("macro", "show", "nope").exit_code == 2

    (tmp_path / "t" / "macros").mkdir(parents=True)
    (tmp_path / "t" / "macros" / "password-reset.en.md").write_text(source)
    env = {**AGENT, "MAILSUPPORT_TEMPLATES_DIR": str(tmp_path / "t")}
    broken = run("reply", str(number), "--macro", "password-reset", "-m", "hi", env=env)
    assert broken.exit_code == 2 and words in broken.output, broken.output
    assert broken.output.startswith("mailsupport: macro ")
    assert len(broken.output.strip().splitlines()) == 1 and "Traceback" not in broken.output
    assert queued(store) == 0


# ------------------------------------------------------------------------------------------
# The editor
# ------------------------------------------------------------------------------------------

# An editor: records the draft it was given, runs the `mailsupport` commands it is told to
# (as other people would, while the agent writes), then writes `text` above the draft.
EDITOR = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys
    path = pathlib.Path(sys.argv[1])
    draft = path.read_text(encoding="utf-8")
    pathlib.Path({seen!r}).write_text(draft, encoding="utf-8")
    for args, data in {meanwhile!r}:
        subprocess.run([sys.executable, "-m", "mailsupport", *args], input=data, check=True,
                       capture_output=True)
    path.write_text({text!r} + draft, encoding="utf-8")
    """
)


def editor(
    tmp_path: Path, text: str, meanwhile: Sequence[tuple[list[str], bytes | None]] = ()
) -> tuple[dict[str, str], Path]:
    """The environment that makes this editor $EDITOR, and the file that gets its draft."""
    script, seen = tmp_path / "editor.py", tmp_path / "draft.seen"
    script.write_text(EDITOR.format(seen=str(seen), meanwhile=list(meanwhile), text=text))
    return {"EDITOR": f"{sys.executable} {script}", "VISUAL": ""}, seen


def test_the_editor_shows_the_greeting_and_signature_the_template_adds(
    run: Run, store: Store, tmp_path: Path
) -> None:
    number = ingest(run, "q1@customer.example.org", body="Здравствуйте! Счёт не пришёл.")
    env, seen = editor(tmp_path, "Счёт отправлен повторно.\n")
    done = run("reply", str(number), env={**AGENT, **env})
    assert done.exit_code == 0, done.output
    above, below = seen.read_text(encoding="utf-8").split(MARKER)
    assert above.strip() == ""
    frame = below.split("# The reply template puts a greeting and a signature", 1)[1]
    assert "#     Здравствуйте, Anna Petrova!\n#\n#     [your text]\n#\n#     --\n" in frame
    assert "#     Maria\n#     Example Support\n" in frame
    assert "#     > Здравствуйте! Счёт не пришёл." in frame  # the quote starts there too

    text = replies(store)[0].text
    assert text.startswith("Здравствуйте, Anna Petrova!\n\nСчёт отправлен повторно.\n\n-- \n")
    assert text.count("Здравствуйте, Anna Petrova!") == 1 and "[your text]" not in text


def test_the_editor_starts_with_the_macro_in_place(run: Run, store: Store, tmp_path: Path) -> None:
    number = ingest(run, "q1@customer.example.org")
    env, seen = editor(tmp_path, "")  # saved as it is
    done = run("reply", str(number), "--macro", "password-reset", env={**AGENT, **env})
    assert done.exit_code == 0, done.output
    above = seen.read_text(encoding="utf-8").split(MARKER)[0]
    assert above.strip().startswith("You can set a new password yourself in a minute:")
    assert "You can set a new password yourself" in replies(store)[0].text


# ------------------------------------------------------------------------------------------
# Collisions: mail that arrives while the agent writes
# ------------------------------------------------------------------------------------------


def answer_meanwhile(number: int) -> list[tuple[list[str], bytes | None]]:
    """While the agent writes: the customer answers, and Oleg leaves a note."""
    late = make_message(
        "late@customer.example.org", subject="Re: Cannot log in",
        in_reply_to="q1@customer.example.org", body="Never mind,\nit works now.\nThanks!",
    )  # fmt: skip
    note = ["note", str(number), "-m", "Called her: fixed.", "--as", "Oleg"]
    return [(["ingest"], late), (note, None)]


def test_news_while_writing_stops_the_reply_and_keeps_the_draft(
    run: Run, store: Store, tmp_path: Path
) -> None:
    number = ingest(run, "q1@customer.example.org")
    env, _ = editor(tmp_path, "Please restart the router.\n", answer_meanwhile(number))
    done = run("reply", str(number), env={**AGENT, **env})
    assert done.exit_code == 1
    assert queued(store) == 0 and replies(store) == []
    news = done.stderr
    assert f"ticket #{number} got 2 new messages while you wrote:" in news
    assert "<< Anna Petrova <anna@customer.example.org>" in news
    assert "   Never mind,\n   it works now." in news
    assert "-- internal note, Oleg" in news and "   Called her: fixed." in news
    last = news.strip().splitlines()[-1]
    assert last.startswith(f"mailsupport: ticket #{number} changed while you wrote: nothing sent")
    kept = Path(last.split("your reply is kept in ", 1)[1].split()[0])
    assert kept.read_text(encoding="utf-8") == "Please restart the router.\n"
    assert "--force" in last and f"mailsupport reply {number} --file {kept}" in last
    kept.unlink()


def test_force_sends_what_the_editor_gave_after_showing_the_news(
    run: Run, store: Store, tmp_path: Path
) -> None:
    number = ingest(run, "q1@customer.example.org")
    env, _ = editor(tmp_path, "Please restart the router.\n", answer_meanwhile(number))
    done = run("reply", str(number), "--force", env={**AGENT, **env})
    assert done.exit_code == 0, done.output
    assert "got 2 new messages" in done.stderr and "sending anyway (--force)" in done.stderr
    assert "Please restart the router." in replies(store)[0].text


@pytest.mark.parametrize(("answer", "sent"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_at_a_terminal_the_agent_chooses(
    answer: str, sent: bool, run: Run, store: Store, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("mailsupport.cli.editor.interactive", lambda: True)
    number = ingest(run, "q1@customer.example.org")
    env, _ = editor(tmp_path, "Please restart the router.\n", answer_meanwhile(number)[1:])
    done = run("reply", str(number), input=answer, env={**AGENT, **env})
    assert "got a new message while you wrote" in done.stderr
    assert "Send your reply anyway? [y/N]" in done.stderr
    assert (done.exit_code == 0) == sent and (queued(store) == 1) == sent
    if not sent:
        kept = Path(done.stderr.split("your reply is kept in ", 1)[1].split()[0])
        assert kept.read_text(encoding="utf-8") == "Please restart the router.\n"
        kept.unlink()


def test_no_news_no_question(run: Run, store: Store, tmp_path: Path) -> None:
    number = ingest(run, "q1@customer.example.org")
    # Mail on another ticket is no news for this one.
    other = make_message("other@c.example.org", sender="Bob <bob@c.example.org>")
    env, _ = editor(tmp_path, "On it.\n", [(["ingest"], other)])
    done = run("reply", str(number), env={**AGENT, **env})
    assert done.exit_code == 0, done.output
    assert "while you wrote" not in done.stderr and ticket_of(store, "other@c.example.org")
