"""Process-level allocator tuning: applied by the command line at start (``diffdeblur.cli.main``) and
by whoever calls :func:`tune_allocator` explicitly; never on import and never by the library's API
(``deblur`` / ``restore_tensor`` leave process-wide settings alone: a program that embeds diffdeblur
keeps its own allocator behaviour unless it asks for this one).

glibc returns large activation buffers to the kernel and re-faults them on every forward pass;
on the project's 2-core machines that cost 1.2-2.8x in speed (measured with and without it). Keeping them
mapped (M_MMAP_MAX = 0, a huge M_TRIM_THRESHOLD) removes that cost at the price of a higher
peak RSS. Set DIFFDEBLUR_MALLOC=default to keep glibc's behaviour.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 64 * 1024 ** 3


def tune_allocator() -> bool:
    """Apply the mallopt settings above on glibc; returns whether they were applied."""
    if os.environ.get("DIFFDEBLUR_MALLOC", "") == "default" or os.name != "posix":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1
        ok &= libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(min(TRIM_THRESHOLD_BYTES, 2 ** 31 - 1))) == 1
        return bool(ok)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False


@functools.cache
def tune_allocator_once() -> bool:
    """:func:`tune_allocator` on the first call in this process; later calls return its result.

    The setting is process-wide (it changes how glibc's malloc serves every later allocation), so only
    an explicit caller applies it (a benchmark, a program that wants the command line's speed); the
    library's restore functions never call it.
    """
    return tune_allocator()
