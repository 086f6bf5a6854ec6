"""Pipeline.run's batches: a count of messages, or fewer when their bytes reach the limit
(a batch's messages and their parses stay in memory until it commits)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsupport import pipeline as pipeline_module
from mailsupport.config import Settings
from mailsupport.pipeline import Incoming, Pipeline
from mailsupport.store.db import Store
from tests.support.mailfactory import make_message

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def batch_ends(settings: Settings, store: Store, sizes: list[int], count: int) -> list[str]:
    """The last message of each committed batch (as on_batch is told), for messages of
    about these sizes (bytes of body) filed in batches of `count`."""
    items = [
        Incoming(make_message(f"m{i}@example.org", subject=f"S{i}", body="x" * size), f"#{i}")
        for i, size in enumerate(sizes)
    ]
    ends: list[str] = []
    with Pipeline(settings, store) as pipeline:
        counts = pipeline.run(
            items,
            lambda: NOW,
            batch_size=count,
            on_batch=lambda session, last: ends.append(last.origin),
        )
    assert counts["new"] == len(sizes)  # every message filed, whatever the batches
    return ends


def test_a_batch_ends_at_its_count_or_its_bytes_whichever_comes_first(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "BATCH_BYTES", 10_000)
    # Four small ones (the count), two of 6,000 bytes (the bytes: the second goes in), one
    # over the limit alone (a batch of its own), and the last two.
    sizes = [10] * 4 + [6_000] * 2 + [20_000] + [10] * 2
    assert batch_ends(settings, store, sizes, 4) == ["#3", "#5", "#6", "#8"]


def test_the_run_ends_when_the_messages_end_on_a_batch_boundary(
    settings: Settings, store: Store
) -> None:
    assert batch_ends(settings, store, [10] * 6, 3) == ["#2", "#5"]
