"""The `mailsupport` command in the test's own process, through typer's CliRunner."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from typer.testing import CliRunner, Result

from mailsupport.cli import app
from mailsupport.config import Settings

Run = Callable[..., Result]  # the `run` fixture of conftest.py: run("list", env={...})


def cli(env: Mapping[str, str], *args: str, input: str | bytes | None = None) -> Result:
    """`mailsupport ARGS` with `env` as its environment; an exception the command does not
    handle fails the test instead of becoming an exit code."""
    return CliRunner().invoke(
        app, list(args), env=dict(env), input=input, prog_name="mailsupport", catch_exceptions=False
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that points the CLI at the store and desk of `settings`."""
    return {
        "MAILSUPPORT_DATA_DIR": str(settings.data_dir),
        "MAILSUPPORT_DATABASE_URL": settings.db_url,
        "MAILSUPPORT_SUPPORT_ADDRESS": settings.support_address,
        "MAILSUPPORT_SUPPORT_NAME": settings.support_name,
    }
