"""Command line: `mailsupport` (console script) and `python -m mailsupport`.

Each module in COMMAND_MODULES registers its commands with the typer application when it is
imported, and `app` imported from here is the application with all of them. `main` imports
only what its command line needs: `list`, `show` and `export` the one module that defines
them, because importing and building all the others costs those commands a tenth of their
time (see docs/benchmarks.md); anything else (--help, completion, every other command) gets
them all.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mailsupport.cli import app as _app_module

if TYPE_CHECKING:
    import typer

# Importing the module `app` bound its name in this package. Unbound, `app` from here is the
# application with every command (see __getattr__); later imports of the module leave it so.
del globals()["app"]

# The modules that register commands, in the order --help lists them.
COMMAND_MODULES = (
    "agentcmd",
    "attachcmd",
    "authcmd",
    "dbcmd",
    "intake",
    "kbcmd",
    "macrocmd",
    "mailbox",
    "ops",
    "outboxcmd",
    "reportcmd",
    "rulescmd",
    "searchcmd",
    "spamcmd",
    "teamcmd",
    "tickets",
)
# Commands that need no module but the one defining them.
LIGHT_COMMANDS = {
    "list": "tickets",
    "show": "tickets",
    "export": "tickets",
    "next": "tickets",
    "search": "searchcmd",
    "report": "reportcmd",
}
# The options of the main callback (app._main), which come before the command.
_ROOT_FLAGS = frozenset({"-v", "--verbose"})
_ROOT_OPTIONS_WITH_VALUE = frozenset({"--config"})


def application(modules: Iterable[str] = COMMAND_MODULES) -> typer.Typer:
    """The typer application with the commands of `modules` registered."""
    for name in modules:
        importlib.import_module(f"{__name__}.{name}")
    return _app_module.app


def __getattr__(name: str) -> Any:
    if name == "app":
        return application()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def modules_for(args: list[str]) -> tuple[str, ...]:
    """The command modules a command line needs: one for a light command, else all."""
    if "_MAILSUPPORT_COMPLETE" in os.environ:  # shell completion asks about every command
        return COMMAND_MODULES
    rest = iter(args)
    for arg in rest:
        if arg in _ROOT_FLAGS or arg.startswith("--config="):
            continue
        if arg in _ROOT_OPTIONS_WITH_VALUE:
            next(rest, None)
            continue
        light = LIGHT_COMMANDS.get(arg)  # anything else (--help, a typo) sees every command
        return COMMAND_MODULES if light is None else (light,)
    return COMMAND_MODULES


def main() -> None:
    _app_module.pause_collector()
    application(modules_for(sys.argv[1:]))(prog_name="mailsupport")
