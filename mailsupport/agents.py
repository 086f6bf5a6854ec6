"""Agents known to the desk: `agent add NAME EMAIL`, `agent list`, `agent remove`.

An agent's address is how the desk recognises their mail (answers to notifications,
forwarded customer mail); their queues and line say which tickets they hear about; their
notification mode overrides MAILSUPPORT_NOTIFY. Once any agent is registered, `--as` and
MAILSUPPORT_AGENT must name one of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import Session, col, func, select

from mailsupport.errors import NotFoundError, RefusedError, UsageError
from mailsupport.store import NAME
from mailsupport.store.models import Agent, Notification

if TYPE_CHECKING:
    from mailsupport.store.db import Store

from mailsupport.team import AGENT_NAME, NotifyMode, check_line, parse_notify, registered_name

ROSTER_SECONDS = 10.0  # how long intake trusts its copy of the registry


@dataclass(frozen=True, slots=True)
class Known:
    """A registered agent as intake and notifications use them (no database object)."""

    name: str
    email: str
    queues: tuple[str, ...] = ()
    line: int | None = None
    notify: str = ""


def known_agents(session: Session) -> list[Known]:
    return [Known(a.name, a.email, tuple(a.queues), a.line, a.notify) for a in all_agents(session)]


class Roster:
    """The registry as intake sees it: read again at most every ROSTER_SECONDS, since every
    message asks about it and agents change rarely (`agent add` counts within seconds)."""

    def __init__(self, every: float = ROSTER_SECONDS) -> None:
        self.every = every
        self._agents: list[Known] = []
        self._read_at: float | None = None

    def agents(self, session: Session) -> list[Known]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.every:
            self._agents, self._read_at = known_agents(session), now
        return self._agents

    def by_address(self, session: Session, address: str) -> Known | None:
        key = address.strip().lower()
        return next((a for a in self.agents(session) if a.email == key), None)


def mode_of(agent: Agent | Known, default: str) -> NotifyMode:
    """The agent's own mode, else the desk's (MAILSUPPORT_NOTIFY)."""
    return parse_notify(agent.notify or default)


def _checked_name(name: str) -> str:
    name = " ".join(name.split())
    if not AGENT_NAME.fullmatch(name):
        raise UsageError(
            f"not an agent name: {name!r} (up to 64 letters, digits and . _ - + @, no spaces)"
        )
    return name


def _checked_email(email: str) -> str:
    from mailsupport.agent import checked_address
    from mailsupport.parsing.addresses import address_pair

    try:
        return checked_address(*address_pair(email.strip()), "the agent's address").key
    except UsageError:  # name what was typed whole, not the piece address_pair kept
        raise UsageError(f"not an email address: {email!r} (the agent's address)") from None


def _checked_queues(queues: Sequence[str]) -> list[str]:
    names = [q.strip() for q in queues if q.strip()]
    for queue in names:
        if not NAME.fullmatch(queue):
            raise UsageError(f"not a queue name: {queue!r} (letters, digits and . : / - _)")
    return list(dict.fromkeys(names))


def _checked_line(line: int | None) -> int | None:
    if line is not None:
        check_line(line)
    return line


def _checked_notify(notify: str) -> str:
    if not notify.strip():
        return ""
    try:
        return str(parse_notify(notify))
    except ValueError as error:
        raise UsageError(str(error)) from None


def add_agent(
    session: Session,
    name: str,
    email: str,
    *,
    queues: Sequence[str] = (),
    line: int | None = None,
    notify: str = "",
    now: datetime,
) -> Agent:
    name, email = _checked_name(name), _checked_email(email)
    if agent_named(session, name) is not None:
        raise RefusedError(f"agent {name} exists already (see `mailsupport agent set`)")
    if agent_by_address(session, email) is not None:
        raise RefusedError(f"{email} is the address of another agent already")
    agent = Agent(
        name=name,
        email=email,
        queues=_checked_queues(queues),
        line=_checked_line(line),
        notify=_checked_notify(notify),
        created_at=now,
    )
    session.add(agent)
    session.flush()
    return agent


def change_agent(
    session: Session,
    name: str,
    *,
    email: str | None = None,
    queues: Sequence[str] | None = None,
    line: int | None = None,
    any_line: bool = False,
    notify: str | None = None,
) -> Agent:
    """Change what is given; `any_line` makes them hear about every line."""
    agent = registered(session, name)
    if email is not None:
        key = _checked_email(email)
        other = agent_by_address(session, key)
        if other is not None and other.id != agent.id:
            raise RefusedError(f"{key} is the address of agent {other.name} already")
        agent.email = key
    if queues is not None:
        agent.queues = _checked_queues(queues)
    if any_line:
        agent.line = None
    elif line is not None:
        agent.line = _checked_line(line)
    if notify is not None:
        agent.notify = _checked_notify(notify)
    session.add(agent)
    session.flush()
    return agent


def remove_agent(session: Session, name: str) -> Agent:
    """Forget the agent (their tickets stay assigned to the name; see `list --assignee`)."""
    agent = registered(session, name)
    session.delete(agent)
    waiting = sa.delete(Notification).where(  # their digest: nobody left to tell
        col(Notification.agent) == agent.name, col(Notification.sent_at).is_(None)
    )
    session.execute(waiting)
    session.flush()
    return agent


def all_agents(session: Session) -> list[Agent]:
    return list(session.exec(select(Agent).order_by(col(Agent.name))).all())


def agent_named(session: Session, name: str) -> Agent | None:
    """The agent called `name`, ignoring case."""
    wanted = " ".join(name.split()).lower()
    return session.exec(select(Agent).where(func.lower(col(Agent.name)) == wanted)).first()


def registered(session: Session, name: str) -> Agent:
    agent = agent_named(session, name)
    if agent is None:
        raise NotFoundError(f"no agent {name!r} (see `mailsupport agent list`)")
    return agent


def agent_by_address(session: Session, address: str) -> Agent | None:
    """The agent whose registered address this is (compared lowercased)."""
    key = address.strip().lower()
    return session.exec(select(Agent).where(col(Agent.email) == key)).first() if key else None


def known_name(session: Session, name: str) -> str:
    """`name` as registered, when any agent is: an unknown one is a UsageError then. With
    no agent registered, any name goes (the desk works without a registry)."""
    return registered_name(name, session.exec(select(Agent.name)).all())


# -- for the command line: each in a transaction of its own, agents as plain dicts ---------


def agent_json(agent: Agent, default_notify: str) -> dict[str, Any]:
    """An agent as `agent list --json` gives it."""
    return {
        "name": agent.name,
        "email": agent.email,
        "queues": list(agent.queues),
        "line": agent.line,
        "notify": agent.notify or default_notify,
        "notify_own": bool(agent.notify),
        "created_at": agent.created_at.isoformat(),
    }


def register(
    store: Store, default_notify: str, name: str, email: str, **how: Any
) -> dict[str, Any]:
    """`add_agent` in a transaction of its own."""
    with store.write() as session:
        return agent_json(add_agent(session, name, email, **how), default_notify)


def change(store: Store, default_notify: str, name: str, **how: Any) -> dict[str, Any]:
    """`change_agent` in a transaction of its own."""
    with store.write() as session:
        return agent_json(change_agent(session, name, **how), default_notify)


def unregister(store: Store, name: str) -> dict[str, Any]:
    """`remove_agent` in a transaction of its own."""
    with store.write() as session:
        return agent_json(remove_agent(session, name), "")


def listing(store: Store, default_notify: str) -> list[dict[str, Any]]:
    with store.read() as session:
        return [agent_json(a, default_notify) for a in all_agents(session)]
