"""FileImport on a real database: how far each mbox got is recorded with the batch that got
it there, also for files that ended inside a batch, and a crash loses the rest of the batch
and its record together."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from mailsupport.config import Settings
from mailsupport.imports import FileImport
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.sources.files import MboxFile, plan_import
from mailsupport.store.db import Store
from mailsupport.store.models import Message
from tests.support.mailfactory import make_message, mbox_file

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class Crash(Exception):
    pass


def stored(store: Store) -> int:
    with store.read() as session:
        return session.exec(select(func.count()).select_from(Message)).one()


def test_a_file_that_ends_inside_a_batch_is_recorded_with_that_batch(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    a = mbox_file(tmp_path / "a.mbox", *(make_message(f"a{i}@x.example.org") for i in range(2)))
    b = mbox_file(tmp_path / "b.mbox", *(make_message(f"b{i}@x.example.org") for i in range(5)))
    run = FileImport(store, plan_import([a, b]), lambda: NOW)
    assert run.prepare() == []
    batches = 0

    def record_then_crash(session: Session, last: Incoming) -> None:
        nonlocal batches
        run.record(session, last)
        batches += 1
        if batches == 2:  # the process dies before the second batch commits
            raise Crash

    settings = settings.model_copy(update={"parse_workers": 0})
    with Pipeline(settings, store) as pipeline, pytest.raises(Crash):
        # The first batch: both messages of a.mbox and the first of b.mbox.
        pipeline.run(run.items(), lambda: NOW, batch_size=3, on_batch=record_then_crash)
    assert stored(store) == 3

    again = FileImport(store, plan_import([a, b]), lambda: NOW)
    first_of_b = next(MboxFile(b, 0).messages())
    assert again.prepare() == [
        f"{a}: all 2 messages imported before (--restart reads it again)",
        f"resuming {b} at message 2 (byte {first_of_b.end})",
    ]
    with Pipeline(settings, store) as pipeline:
        counts = pipeline.run(again.items(), lambda: NOW, batch_size=3, on_batch=again.record)
        again.finish()
    assert sum(counts.values()) == 4 and again.skipped == 3
    assert stored(store) == 7
