"""`rules test` and `rules check`: what the classification rules would do, and why."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mailsupport.cli.app import app, print_json, state, sub_app
from mailsupport.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from mailsupport.rules import RuleSet

rules_app = sub_app(
    """Classification rules for new tickets (MAILSUPPORT_RULES_FILE).

    Examples:
        mailsupport rules check
        mailsupport rules test message.eml
    """
)
app.add_typer(rules_app, name="rules", rich_help_panel="Operator")

RULES_OPTION = typer.Option(
    None, "--rules", metavar="PATH", help="A rules file (default: MAILSUPPORT_RULES_FILE)."
)


def _load(ctx: typer.Context, rules: Path | None) -> RuleSet:
    from mailsupport.rules import load_rules

    configured = state(ctx).settings.rules_file
    path = rules or (Path(configured) if configured else None)
    if path is None:
        raise ConfigError("no rules file: set MAILSUPPORT_RULES_FILE or pass --rules PATH")
    return load_rules(path)


@rules_app.command("check")
def check(ctx: typer.Context, rules: Path | None = RULES_OPTION) -> None:
    """Read the rules file and report the first problem (file and line), or how many rules.

    Examples:
        mailsupport rules check
        mailsupport rules check --rules rules.toml
    """
    found = _load(ctx, rules)
    typer.echo(f"{found.source}: {len(found)} rules, all fine")


@rules_app.command("test")
def test(
    ctx: typer.Context,
    message: Path = typer.Argument(..., metavar="FILE.eml", help="A message file."),
    rules: Path | None = RULES_OPTION,
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Show which rules would apply to a message, why, and what they would set.

    Examples:
        mailsupport rules test message.eml
        mailsupport rules test message.eml --json
    """
    from mailsupport.parsing import parse
    from mailsupport.rules import classify

    found = _load(ctx, rules)
    try:
        raw = message.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {message}: {error.strerror or error}") from None
    result = classify(found, parse(raw))
    changes = result.changes()
    if as_json:
        print_json(
            {
                "matched": [{"rule": name, "reasons": why} for name, why in result.matched],
                "set": changes,
            }
        )
        return
    if not result.matched:
        typer.echo("no rule applies")
        return
    from mailsupport.cli.render import terminal_text  # reasons quote the message's headers

    for name, why in result.matched:
        typer.echo(terminal_text(f"rule {name!r}: {'; '.join(why)}", one_line=True))
    for key, value in changes.items():
        shown = " ".join(value) if isinstance(value, list) else value
        typer.echo(terminal_text(f"  {key:<9} {shown}", one_line=True))
