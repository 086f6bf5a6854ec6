"""`macro list | show`: canned replies an agent starts from (`reply N --macro NAME`)."""

from __future__ import annotations

import typer

from mailsupport.cli.agentcmd import AGENT, AS_OPTION, desk_for
from mailsupport.cli.app import app, print_json, state, sub_app, ticket_number
from mailsupport.cli.render import terminal_text

macro_app = sub_app(
    """Canned replies: Markdown texts with the ticket's and the customer's details filled
    in, which `reply N --macro NAME` starts from.

    They are the files NAME.LANGUAGE.md (or NAME.md for every language) in the macros
    folder of the templates: the built-in ones, and yours in MAILSUPPORT_TEMPLATES_DIR/macros,
    which replace built-in files of the same name.

    Examples:
        mailsupport macro list
        mailsupport macro show password-reset 12
    """
)
app.add_typer(macro_app, name="macro", rich_help_panel=AGENT)


@macro_app.command("list")
def macro_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")
) -> None:
    """List the macros: name, languages, and title (the comment on the first line, else
    the first line of text). `*` is a file for every language.

    --json gives a list of objects, one per file: name, language (null for every
    language), title, path (null for a built-in one).

    Examples:
        mailsupport macro list
        mailsupport macro list --json
    """
    from mailsupport.macros import Macros

    files = Macros(state(ctx).settings.templates_path).all()
    if as_json:
        rows = [
            {"name": m.name, "language": m.language or None, "title": m.title,
             "path": m.path or None}
            for m in files
        ]  # fmt: skip
        print_json(rows)
        return
    names: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    for m in files:
        names.setdefault(m.name, []).append(m.language or "*")
        if m.language in ("", "en") or m.name not in titles:  # English, when there is one
            titles[m.name] = m.title
    if not names:
        typer.echo("no macros")
        return
    width = max(len(name) for name in names)
    for name, languages in names.items():
        shown = " ".join(languages)
        typer.echo(terminal_text(f"{name:<{width}}  {shown:<5}  {titles[name]}", one_line=True))


@macro_app.command("show")
def macro_show(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The macro, as in `macro list`."),
    number: int | None = typer.Argument(
        None,
        metavar="N",
        parser=ticket_number,
        help="Fill it in for this ticket, as `reply N --macro NAME` would.",
    ),
    as_: str | None = AS_OPTION,
) -> None:
    """Show a macro as written (every language, each after a ==> file <== line when
    there are several), or filled in for ticket N in the language a reply to it takes.

    Exit status: 0 shown, 1 no ticket N, 2 no such macro or a broken one.

    Examples:
        mailsupport macro show need-more-info
        mailsupport macro show password-reset 12
    """
    if number is not None:
        start = desk_for(state(ctx), as_).start_reply(number, macros=[name])
        typer.echo(terminal_text(start.frame.canned))
        return
    from mailsupport.macros import Macros

    versions = Macros(state(ctx).settings.templates_path).versions(name)
    for index, m in enumerate(versions):
        if len(versions) > 1:
            typer.echo(("\n" if index else "") + f"==> {m.path or 'built-in ' + m.filename} <==")
        typer.echo(terminal_text(m.source.rstrip("\n")))
