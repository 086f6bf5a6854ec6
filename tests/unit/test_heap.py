"""Memory given back to the system between batches (mailsupport/heap.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from mailsupport import heap


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_free_memory_kept_by_the_heap_goes_back_to_the_system() -> None:
    # Blocks of 600-1,000 bytes (malloc's, not Python's small-object pools); one in twenty
    # kept, so the free ones lie between live ones, where the heap cannot shrink by itself.
    blocks = [bytes(600 + i % 400) for i in range(250_000)]
    kept = blocks[::20]
    del blocks
    before = rss_mib()
    clock = iter([1e9, 1e9, 1e9 + 1, 1e9 + 1]).__next__
    assert heap.give_back(now=clock)
    assert rss_mib() < before - 50  # about 190 MiB were allocated, 10 MiB kept
    assert not heap.give_back(now=clock)  # a second later: not again so soon
    assert len(kept) == 12_500
