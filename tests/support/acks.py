"""Acknowledgement tests' desk: settings that send through the test SMTP server, mail taken
at a fixed time, and what was queued to go out."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from sqlmodel import col, select

from mailsupport.config import Settings, load_settings
from mailsupport.outbox.delivery import deliver_due
from mailsupport.pipeline import Incoming, Outcome, Pipeline
from mailsupport.store.db import Store
from mailsupport.store.models import Message, OutboxItem
from tests.support.smtpserver import SmtpServer

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def desk_settings(base: Settings, server: SmtpServer, **extra: Any) -> Settings:
    """The test settings with outgoing mail through `server` (fresh, so that derived
    values such as our addresses follow the overrides)."""
    values: dict[str, Any] = {
        "data_dir": base.data_dir,
        "database_url": base.database_url,
        "support_address": base.support_address,
        "support_name": base.support_name,
        "smtp_host": server.host,
        "smtp_port": server.port,
        "smtp_security": "none",
        "smtp_timeout": 5,
    }
    values.update(extra)
    return load_settings(**values)


def ingest_at(pipeline: Pipeline, raw: bytes, now: datetime = T0, **kwargs: Any) -> Outcome:
    """One message through the pipeline at `now`; `kwargs` as for Incoming."""
    return pipeline.ingest(Incoming(raw, "test", now, **kwargs), now)


def send(store: Store, settings: Settings, now: datetime = T0) -> Counter[str]:
    """Deliver what is due at `now`; counts by outcome."""
    return deliver_due(store, settings, lambda: now)


def acks_in(store: Store) -> list[OutboxItem]:
    """Everything queued to go out, oldest first."""
    with store.read() as session:
        return list(session.exec(select(OutboxItem).order_by(col(OutboxItem.id))).all())


def incoming(store: Store, message_id: str) -> Message:
    with store.read() as session:
        return session.exec(select(Message).where(Message.message_id == message_id)).one()
