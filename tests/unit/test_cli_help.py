"""The command line reads like a well-kept CLI: plain help reflowed to the terminal, flags
without metavars, options with meaningful ones, an example for every command, every
example accepted by the parser, usage errors in one line, and ticket numbers as 12 or #12."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from mailsupport.cli import app
from mailsupport.cli.app import split_examples
from tests.support.mailfactory import make_message
from tests.support.processes import mailsupport_process

# What typer prints for a parameter when nobody chose how it reads: <bool>, <str>,
# <int range>, <list[str]>, {N}; and rich's boxes.
UNCHOSEN = re.compile(r"<[a-z][a-z_\[\] ]*>|\{[A-Za-z_]+\}|[╭╰│]")


def commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group below the root, with its path of names."""

    def walk(path: tuple[str, ...], command: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk((*path, name), sub)

    yield from walk((), get_command(app))


COMMANDS = list(commands())
IDS = [" ".join(path) or "(root)" for path, _ in COMMANDS]


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env, prog_name="mailsupport")


def help_text(*args: str, columns: int = 80) -> str:
    result = run(*args, "--help", env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def parse_only(args: list[str]) -> Any:
    """The context of the command that `args` names, parsed as the CLI would, not run."""
    command = get_command(app)
    ctx = command.make_context("mailsupport", list(args))
    while getattr(command, "commands", None) is not None:
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def shell_words(example: str) -> list[str]:
    """An example line as the shell would pass it: no redirections, no pipe."""
    words = []
    for word in shlex.split(example):
        if word in ("<", ">", "|"):
            break
        words.append(word)
    assert words[0] == "mailsupport", example
    return words[1:]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_help_is_plain_text_that_fits_80_columns(path: tuple[str, ...], command: Any) -> None:
    text = help_text(*path)
    assert text.startswith(f"Usage: {' '.join(('mailsupport', *path))} ")
    assert not UNCHOSEN.findall(text), UNCHOSEN.findall(text)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_every_command_has_examples_the_parser_accepts(path: tuple[str, ...], command: Any) -> None:
    _, examples = split_examples(command.help or "")
    assert examples, f"mailsupport {' '.join(path)} has no Examples: section"
    assert "Examples:" in help_text(*path)
    for example in examples:
        ctx = parse_only(shell_words(example))
        # a group's examples show its commands at work
        assert ctx.command_path.split()[1 : len(path) + 1] == list(path), example


def test_flags_show_no_metavar_and_options_a_meaningful_one() -> None:
    reply = help_text("reply")
    assert re.search(r"^  --pending {2,}Set the ticket pending", reply, re.M)
    assert re.search(r"^  --attach FILE {2,}Attach a file", reply, re.M)
    assert re.search(r"^  -m, --message TEXT {2,}", reply, re.M)
    listing = help_text("list")
    assert re.search(r"^  --status STATUS {2,}Only tickets with this status", listing, re.M)
    assert re.search(
        r"^  --limit N {2,}At most this many tickets\.  \[default: 50\]", listing, re.M
    )
    assert re.search(r"^  --reverse {2,}The opposite order", listing, re.M)
    assert "Usage: mailsupport show [OPTIONS] N\n" in help_text("show")
    assert "Usage: mailsupport quarantine retry [OPTIONS] [ID]\n" in help_text(
        "quarantine", "retry"
    )


def help_in_a_terminal(*args: str, columns: int) -> str:
    """Help as a real process prints it for a terminal COLUMNS wide (typer's CliRunner
    always formats for 80)."""
    done = mailsupport_process({"COLUMNS": str(columns)}, *args, "--help")
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


@pytest.mark.slow
def test_paragraphs_reflow_to_the_terminal() -> None:
    sentence = (
        "Quoted history in the messages is folded away (--full shows it); --history adds "
        "every change to the ticket."
    )
    for columns in (60, 80, 140):
        text = help_in_a_terminal("show", columns=columns)
        assert max(len(line) for line in text.splitlines()) <= min(columns, 100)
        assert " ".join(text.split()).count(sentence) == 1  # the same words, rewrapped
    wide = help_in_a_terminal("show", columns=140)
    [first] = [line for line in wide.splitlines() if line.startswith("  Quoted history")]
    assert len(first) > 80  # the docstring's own line breaks are gone


def test_the_root_help_groups_agent_and_operator_commands() -> None:
    text = help_text()
    agent, operator = text.index("Agent commands:"), text.index("Operator commands:")
    assert agent < text.index("\n  reply ") < operator < text.index("\n  poll ")
    assert "--version" in text


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"mailsupport {importlib.metadata.version('mailsupport')}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--bogus"], "mailsupport: list: no such option: --bogus"),
        (
            ["list", "--stauts"],
            "mailsupport: list: no such option: --stauts; did you mean --status?",
        ),
        (["lsit"], "mailsupport: no such command 'lsit'; did you mean 'list'?"),
        (["show"], "mailsupport: show: missing argument 'N'"),
        (["show", "x"], "mailsupport: show: invalid value for 'N': 'x' is not a ticket number"),
        (["list", "--limit", "0"], "mailsupport: list: invalid value for '--limit'"),
        (["bogus"], "mailsupport: no such command 'bogus'"),
        (["quarantine", "shw"], "mailsupport: quarantine: no such command 'shw'"),
        (["--config"], "mailsupport: option '--config' requires an argument"),
    ],
)
def test_usage_errors_are_one_line_on_stderr(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(message), line
    assert line.endswith("--help)"), line


def test_usage_errors_in_a_real_process_have_no_panels() -> None:
    done = mailsupport_process({}, "merge", "1")
    assert done.returncode == 2
    assert done.stdout == b""
    assert done.stderr.decode().splitlines() == [
        "mailsupport: merge: missing argument 'M' (see mailsupport merge --help)"
    ]


@pytest.mark.parametrize("args", [[], ["outbox"], ["kb"]])
def test_a_command_without_arguments_shows_its_help(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: {' '.join(['mailsupport', *args])} ")
    assert result.stderr == ""


def ticket_commands() -> Iterator[tuple[list[str], str]]:
    """Each command with a ticket-number argument, the arguments it needs, and the param."""
    for path, command in COMMANDS:
        for param in command.params:
            if param.param_type_name == "argument" and param.metavar in ("N", "M"):
                yield [*path], param.name


@pytest.mark.parametrize(("path", "name"), list(ticket_commands()))
def test_every_ticket_number_is_taken_as_12_or_hash_12(path: list[str], name: str) -> None:
    rest = {"assign": ["me"], "priority": ["high"], "tag": ["+x"]}.get(path[-1], [])
    first = ["need-more-info"] if path == ["macro", "show"] else []  # NAME [N]

    def numbers(written: str) -> list[str]:
        if path == ["merge"]:
            return ["13", written] if name == "other" else [written, "13"]
        return [*first, written]

    for written in ("12", "#12", " #12 "):
        assert parse_only([*path, *numbers(written), *rest]).params[name] == 12
    with pytest.raises(Exception) as refused:
        parse_only([*path, *numbers("#x"), *rest])
    assert getattr(refused.value, "exit_code", None) == 2


def test_show_takes_hash_numbers(env_for_cli: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "one.eml").write_bytes(make_message())
    assert run("import", str(tmp_path / "one.eml"), env=env_for_cli).exit_code == 0
    plain = run("show", "1", env=env_for_cli)
    hashed = run("show", "#1", env=env_for_cli)
    assert plain.exit_code == hashed.exit_code == 0
    assert hashed.stdout == plain.stdout
    assert "#1" in plain.stdout
