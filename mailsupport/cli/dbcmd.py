"""`mailsupport db ...`: schema migrations (and `db move-attachments`, in attachcmd.py)."""

from __future__ import annotations

import typer

from mailsupport.cli.app import app, state, sub_app

db_app = sub_app(
    """Database schema: create and upgrade; where attachments are kept.

    Examples:
        mailsupport db status
        mailsupport db upgrade
        mailsupport db move-attachments --to database
    """
)
app.add_typer(db_app, name="db", rich_help_panel="Operator")


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create the database or bring its schema up to date (back it up first).

    Examples:
        mailsupport db upgrade
    """
    store = state(ctx).store(check_schema=False)
    before = store.current_revision()
    store.upgrade()
    after = store.current_revision()
    if before == after:
        typer.echo(f"database schema is up to date (revision {after})")
    else:
        typer.echo(f"database schema upgraded from {before or 'empty'} to {after}")


@db_app.command("status")
def status(ctx: typer.Context) -> None:
    """Show the schema revision of the database and the one this version needs.

    Examples:
        mailsupport db status
    """
    from mailsupport.store.db import SCHEMA_REVISION

    st = state(ctx)
    current = st.store(check_schema=False).current_revision()
    from sqlalchemy.engine import make_url

    typer.echo(f"database: {make_url(st.settings.db_url).render_as_string(hide_password=True)}")
    typer.echo(f"schema revision: {current or 'empty'} (this mailsupport needs {SCHEMA_REVISION})")
    if current != SCHEMA_REVISION:
        raise typer.Exit(1)
