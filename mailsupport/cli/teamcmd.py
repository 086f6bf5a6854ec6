"""`agent add | set | list | remove`: the agents known to the desk (see mailsupport/agents.py)."""

from __future__ import annotations

from typing import Any

import typer

from mailsupport.cli.app import app, print_json, state, sub_app, utcnow

agent_app = sub_app(
    """The agents known to the desk: who they are, where their notifications go.

    Once any agent is registered, --as and MAILSUPPORT_AGENT must name one of them.

    Examples:
        mailsupport agent add anna anna@example.com --queue billing --line 1
        mailsupport agent set anna --notify digest:30m
        mailsupport agent list
    """
)
app.add_typer(agent_app, name="agent", rich_help_panel="Agent")

QUEUE_OPTION = typer.Option(
    None, "--queue", metavar="Q", help="A queue whose new tickets they hear about (repeat)."
)
LINE_OPTION = typer.Option(None, "--line", metavar="N", help="The support line they work (1-9).")
NOTIFY_OPTION = typer.Option(
    None,
    "--notify",
    metavar="MODE",
    help="instant, digest:30m or off (default: MAILSUPPORT_NOTIFY).",
)


def _describe(agent: dict[str, Any]) -> str:
    queues = ", ".join(agent["queues"]) if agent["queues"] else "every queue"
    line = f"line {agent['line']}" if agent["line"] is not None else "every line"
    notify = agent["notify"] + ("" if agent["notify_own"] else " (the desk's)")
    return f"{agent['name']} <{agent['email']}>: {queues}; {line}; notify {notify}"


@agent_app.command("add")
def agent_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Their name, as --as gives it."),
    email: str = typer.Argument(..., metavar="EMAIL", help="Their own mail address."),
    queue: list[str] = QUEUE_OPTION,
    line: int | None = LINE_OPTION,
    notify: str | None = NOTIFY_OPTION,
) -> None:
    """Register an agent.

    Their address receives their notifications, and their mail from it is
    theirs: answers to notifications, customers' mail they forward. With no
    --queue they hear about every queue; with no --line about every line.

    Exit status: 0 added, 1 the name or address is taken, 2 a bad value.

    Examples:
        mailsupport agent add anna anna@example.com
        mailsupport agent add boris boris@example.com --queue billing --line 2
    """
    from mailsupport.agents import register

    st = state(ctx)
    agent = register(
        st.store(), st.settings.notify, name, email, queues=queue or [], line=line,
        notify=notify or "", now=utcnow(),
    )  # fmt: skip
    typer.echo(f"added {_describe(agent)}")


@agent_app.command("set")
def agent_set(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The agent, as `agent list` names them."),
    email: str | None = typer.Option(None, "--email", metavar="EMAIL", help="A new address."),
    queue: list[str] = QUEUE_OPTION,
    every_queue: bool = typer.Option(False, "--every-queue", help="Hear about every queue."),
    line: int | None = LINE_OPTION,
    every_line: bool = typer.Option(False, "--every-line", help="Hear about every line."),
    notify: str | None = NOTIFY_OPTION,
) -> None:
    """Change an agent's address, queues, line or notifications.

    --queue replaces their queues; --notify '' goes back to the desk's mode.

    Exit status: 0 changed, 1 no such agent or the address is taken, 2 a bad value.

    Examples:
        mailsupport agent set anna --notify digest:1h
        mailsupport agent set boris --queue billing --every-line
    """
    from mailsupport.agents import change
    from mailsupport.errors import UsageError

    if queue and every_queue:
        raise UsageError("choose one of --queue and --every-queue")
    if line is not None and every_line:
        raise UsageError("choose one of --line and --every-line")
    st = state(ctx)
    agent = change(
        st.store(), st.settings.notify, name, email=email,
        queues=[] if every_queue else (queue or None), line=line, any_line=every_line,
        notify=notify,
    )  # fmt: skip
    typer.echo(f"changed {_describe(agent)}")


@agent_app.command("list")
def agent_list(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")
) -> None:
    """List the agents: name, address, queues, line, notifications.

    --json gives a list of objects: name, email, queues, line (null = every
    line), notify (in effect), notify_own (set for this agent), created_at.

    Examples:
        mailsupport agent list
        mailsupport agent list --json
    """
    from mailsupport.agents import listing

    st = state(ctx)
    agents = listing(st.store(), st.settings.notify)
    if as_json:
        print_json(agents)
        return
    if not agents:
        typer.echo("no agents registered (add one with `mailsupport agent add NAME EMAIL`)")
    for agent in agents:
        typer.echo(_describe(agent))


@agent_app.command("remove")
def agent_remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The agent, as `agent list` names them."),
) -> None:
    """Forget an agent: no more notifications, and their mail is anyone's.

    Tickets assigned to them stay so (see `list --assignee NAME`).

    Exit status: 0 removed, 1 no such agent.

    Examples:
        mailsupport agent remove anna
    """
    from mailsupport.agents import unregister

    agent = unregister(state(ctx).store(), name)
    typer.echo(f"removed {agent['name']} <{agent['email']}>")
