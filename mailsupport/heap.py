"""Memory handed back to the system between batches.

glibc's malloc keeps what is freed for the process to use again, and a long run of
messages of all sizes (an import of a million, a daemon's days) leaves its heap holey: the
process grew by about 10 MiB over 300,000 messages that way, most of it free (a
malloc_trim() then gave 9 MiB of it back). Intake asks for it between batches, at most every
EVERY_SECONDS (trimming a fragmented heap of 200 MB took 36 ms). Elsewhere (musl, macOS)
there is no such call, and nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections.abc import Callable

EVERY_SECONDS = 10.0
_last = [0.0]  # when memory was last given back (monotonic)


def give_back(*, now: Callable[[], float] = time.monotonic) -> bool:
    """Return the C heap's free memory to the system, unless that was done less than
    EVERY_SECONDS ago. Whether it was done now."""
    trim = _malloc_trim()
    if trim is None or now() - _last[0] < EVERY_SECONDS:
        return False
    trim(0)
    _last[0] = now()
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library this process runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]
