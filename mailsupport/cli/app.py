"""The typer application, its shared state and the mapping of errors to exit codes."""

from __future__ import annotations

import difflib
import gc
import inspect
import json
import os
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

# typer (0.26 and newer) carries its own copy of click; its command classes and usage errors
# are reached here and nowhere else, and pyproject.toml bounds typer to the versions tested.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, NoSuchOption
from typer.core import TyperCommand, TyperGroup

from mailsupport.cli.render import terminal_text
from mailsupport.errors import MailSupportError, UsageError

if TYPE_CHECKING:
    from mailsupport.config import Settings
    from mailsupport.mailboxes import Mailboxes
    from mailsupport.store.db import Store


# Help is plain text reflowed to the terminal, at most this wide (longer lines read badly).
HELP_WIDTH = 100
EXAMPLES = "Examples:"


class _PlainHelp:
    """Help that reads like a well-kept command line, the same for commands and groups.

    `Usage: mailsupport show [OPTIONS] N`, then the docstring's paragraphs reflowed to the
    terminal, `--flag` alone and `--option VALUE` with a metavar, and the docstring's
    "Examples:" lines kept as written."""

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        text, _ = split_examples(getattr(self, "help", None) or "")
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(text)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = ["[OPTIONS]"] if any(_is_option(p) for p in self.get_params(ctx)) else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            if not _is_option(param):
                name = param.metavar or param.name.upper()
                dots = "..." if param.nargs != 1 and not name.endswith("...") else ""
                pieces.append(name + dots if param.required else f"[{name}{dots}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        params = [p for p in self.get_params(ctx) if not getattr(p, "hidden", False)]  # type: ignore[attr-defined]
        arguments = [_argument_row(p) for p in params if not _is_option(p) and p.help]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = [_option_row(p) for p in params if _is_option(p)]
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        _, examples = split_examples(getattr(self, "help", None) or "")
        if examples:
            formatter.write_paragraph()
            formatter.write_text(EXAMPLES)
            formatter.write("".join(f"  {line}\n" if line else "\n" for line in examples))


class _Command(_PlainHelp, TyperCommand):
    pass


class _Group(_PlainHelp, TyperGroup):
    """Turns a MailSupportError anywhere below into one line on stderr and its exit code,
    and a mistake on the command line into one line too."""

    def make_context(self, info_name: str | None, args: list[str], **extra: Any) -> Any:
        with _usage_errors_in_one_line():
            return super().make_context(info_name, args, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with _usage_errors_in_one_line():
                return super().invoke(ctx)
        except MailSupportError as error:  # errors can quote mail or servers: cleaned
            typer.echo(f"mailsupport: {terminal_text(str(error), one_line=True)}", err=True)
            ctx.exit(error.exit_code)
        except BrokenPipeError:  # `mailsupport export | head` is normal use
            sys.stderr.close()
            ctx.exit(0)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "COMMAND [ARGS]..."]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        super().format_options(ctx, formatter)
        panels: dict[str, list[tuple[str, str]]] = {}
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            panel = getattr(command, "rich_help_panel", None)
            title = f"{panel} commands" if panel else "Commands"
            summary = split_examples(command.help or "")[0].split("\n\n")[0]
            panels.setdefault(title, []).append((name, " ".join(summary.split())))
        for title, rows in panels.items():
            with formatter.section(title):
                formatter.write_dl(rows)


@contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    """A usage error (unknown option, bad value, missing argument) as one line on stderr,
    exit 2; a command that needs arguments and got none shows its help instead."""
    try:
        yield
    except NoArgsIsHelpError as shown:
        typer.echo(shown.ctx.get_help())
        raise typer.Exit(0) from None
    except ClickException as error:
        typer.echo(f"mailsupport: {one_line_usage_error(error)}", err=True)
        raise typer.Exit(error.exit_code) from None


def one_line_usage_error(error: ClickException) -> str:
    """`list: no such option: --bogus (see mailsupport list --help)`."""
    message = " ".join(error.format_message().split()).rstrip(".")
    if isinstance(error, NoSuchOption) and error.possibilities:
        close = difflib.get_close_matches(error.option_name, error.possibilities, 2, 0.7)
        guesses = " or ".join(close or sorted(error.possibilities)[:3])
        message = f"no such option: {error.option_name}; did you mean {guesses}?"
    message = message.replace(". Did you mean", "; did you mean")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    ctx = getattr(error, "ctx", None)
    path = ctx.command_path if ctx is not None else "mailsupport"
    command = path.partition(" ")[2]
    where = f"{command}: " if command else ""
    return f"{where}{message} (see {path} --help)"


def split_examples(text: str) -> tuple[str, list[str]]:
    """A docstring's prose, and the lines of its "Examples:" section (kept as written)."""
    text = inspect.cleandoc(text)
    prose, marker, examples = text.partition(f"\n{EXAMPLES}\n")
    if not marker:
        return text, []
    return prose.rstrip(), textwrap.dedent(examples).strip("\n").splitlines()


def _is_option(param: Any) -> bool:
    return bool(getattr(param, "param_type_name", "") == "option")


def _argument_row(param: Any) -> tuple[str, str]:
    return param.metavar or param.name.upper(), param.help or ""


def _option_row(param: Any) -> tuple[str, str]:
    names = sorted(param.opts, key=lambda o: (o.startswith("--"), o))
    shown = ", ".join(names)
    if param.secondary_opts:
        shown += " / " + ", ".join(param.secondary_opts)
    if not param.is_flag:
        shown += f" {param.metavar or metavar_for(param)}"
    help_text = param.help or ""
    default = param.default
    if param.required:
        help_text += "  [required]"
    elif (
        param.show_default
        and not param.is_flag
        and not callable(default)
        and default not in (None, "", (), [])
    ):
        shown_default = (
            ", ".join(map(str, default)) if isinstance(default, list | tuple) else default
        )
        help_text += f"  [default: {shown_default}]"
    return shown, help_text.strip()


def metavar_for(param: Any) -> str:
    """An option's value in help, from its long name: --due-within -> DUE_WITHIN."""
    longest = max(param.opts, key=len).lstrip("-")
    return longest.replace("-", "_").upper()


def ticket_number(value: str) -> int:
    """A ticket number as agents write it: 12 or #12."""
    text = value.strip().removeprefix("#").strip()
    if not text.isdigit() or not 0 < int(text) < 10**9:
        raise typer.BadParameter(f"{value!r} is not a ticket number: write 12 or #12")
    return int(text)


class _Typer(typer.Typer):
    """typer.Typer whose commands and groups all use the help above."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


def sub_app(help_text: str) -> typer.Typer:
    return _Typer(
        cls=_Group,
        help=help_text,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


app = _Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH},
)


# Set by pause_collector: main turned the garbage collector off for the start of the process.
_collector_paused = False


def pause_collector() -> None:
    """Turn the cyclic garbage collector off until the settings are loaded.

    Starting up (typer, pydantic, the settings model) builds some 50,000 objects that live as
    long as the process; the collector walked them some 70 times for nothing, 10 to 15 ms of
    `list`."""
    global _collector_paused
    if gc.isenabled():
        gc.disable()
        _collector_paused = True


def resume_collector() -> None:
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.freeze()  # what starting up built, never to be walked again (a few hundred are garbage)
        gc.enable()


@contextmanager
def _pydantic_plugins_off() -> Iterator[None]:
    """No pydantic plugins for the settings model, unless PYDANTIC_DISABLE_PLUGINS says.

    Looking for them reads every installed distribution's entry points, about 8 ms of `list`;
    typer turns them off for its own models the same way."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        yield
        return
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
    try:
        yield
    finally:
        del os.environ["PYDANTIC_DISABLE_PLUGINS"]


@dataclass
class State:
    """Per-invocation state: settings and store are built on first use, once."""

    config_path: str | None = None
    verbose: bool = False
    # Settings stop at a bad mailboxes file too (`doctor` turns it off to report it).
    check_mailboxes: bool = True
    _settings: Settings | None = None
    _store: Store | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            with _pydantic_plugins_off():
                from mailsupport.config import load_settings

                self._settings = load_settings(self.config_path)
            resume_collector()  # started up: the command's own work is collected as usual
            from mailsupport.logs import log_to_stderr

            level = "INFO" if self.verbose else self._settings.log_level
            fmt = "%(levelname)s %(name)s: %(message)s"
            log_to_stderr(self._settings, level, fmt, replace=False)
            if self._settings.mailboxes_file and self.check_mailboxes:  # stops every command
                self.mailboxes  # noqa: B018
        return self._settings

    @property
    def mailboxes(self) -> Mailboxes:
        """The desk's mailboxes (MAILSUPPORT_MAILBOXES_FILE, or the one `default`)."""
        if "mailboxes" not in self.extra:
            from mailsupport.mailboxes import load_mailboxes

            self.extra["mailboxes"] = load_mailboxes(self.settings)
        return self.extra["mailboxes"]  # type: ignore[no-any-return]

    def store(self, check_schema: bool = True) -> Store:
        if self._store is None:
            from mailsupport.store.db import Store

            self._store = Store.open(self.settings.db_url, check_schema=check_schema)
        return self._store

    def agent_name(self, given: str | None = None) -> str:
        """Who is working: --as NAME, else MAILSUPPORT_AGENT, else the login name."""
        name = (given or self.settings.agent or "").strip()
        if not name:
            import getpass

            try:
                name = getpass.getuser()
            except (KeyError, OSError):  # no passwd entry (some containers)
                name = ""
        if not name:
            raise UsageError("who are you? set MAILSUPPORT_AGENT or pass --as NAME")
        from mailsupport.store.reader import reading
        from mailsupport.team import registered_name

        with reading(self.settings.db_url, self.store) as reader:  # the fast path of `list`
            names = [row["name"] for row in reader.all("SELECT name FROM agents")]
        return registered_name(name, names)


@app.callback()
def _main(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "--config",
        metavar="PATH",
        help="Settings file (default: MAILSUPPORT_CONFIG, ./settings.env).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each processed message."),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=lambda given: _print_version() if given else None,
        help="Print the version and exit.",
    ),
) -> None:
    """mailsupport: an email-driven support desk.

    Customers write to the support address; mailsupport threads every message into a
    ticket, acknowledges new tickets, and agents answer from here. Settings come from
    MAILSUPPORT_* variables or a settings file (see settings.example.env); `mailsupport
    doctor` checks them. `mailsupport COMMAND --help` tells more about each command.

    Examples:
        mailsupport doctor
        mailsupport import mail.mbox
        mailsupport list --status open
        mailsupport show 12
    """
    ctx.obj = State(config_path=config, verbose=verbose)


def _print_version() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("mailsupport")
    except PackageNotFoundError:  # run from a checkout that was never installed
        from mailsupport import __version__ as number
    typer.echo(f"mailsupport {number}")
    raise typer.Exit(0)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def utcnow() -> datetime:
    return datetime.now(UTC)


# What json.dumps(ensure_ascii=False) leaves raw but a terminal obeys: DEL and the C1
# controls (U+009B starts an escape sequence on many terminals).
_C1 = str.maketrans({c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)})


def to_json(value: Any, indent: int | None = None) -> str:
    """JSON for scripts, readable (not ASCII-escaped) yet safe on a terminal."""
    return json.dumps(value, ensure_ascii=False, indent=indent).translate(_C1)


def print_json(value: Any) -> None:
    typer.echo(to_json(value, indent=2))


def use_colour(stream: Any = None) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
