"""The typer application, its shared state and the mapping of errors to exit codes."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from mailsupport.errors import MailSupportError, UsageError

if TYPE_CHECKING:
    from mailsupport.config import Settings
    from mailsupport.store.db import Store


class _Group(TyperGroup):
    """Turns a MailSupportError anywhere below into one line on stderr and its exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailSupportError as error:
            typer.echo(f"mailsupport: {error}", err=True)
            ctx.exit(error.exit_code)
        except BrokenPipeError:  # `mailsupport export | head` is normal use
            sys.stderr.close()
            ctx.exit(0)


def sub_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        cls=_Group, help=help_text, no_args_is_help=True, pretty_exceptions_enable=False
    )


app = typer.Typer(
    cls=_Group,
    help="mailsupport: an email-driven support desk.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
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
        return self._settings

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
        return " ".join(name.split())


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
) -> None:
    ctx.obj = State(config_path=config, verbose=verbose)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    assert isinstance(obj, State)
    return obj


def utcnow() -> datetime:
    return datetime.now(UTC)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2))


def use_colour(stream: Any = None) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def local_time(value: datetime | None) -> str:
    """A stored UTC time in the agent's local zone, to the minute."""
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"
