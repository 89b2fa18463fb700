"""Giving freed memory back to the system after a burst.

glibc's allocator keeps freed memory in its arenas (libzmq's I/O thread has
one of its own) and, after large frames come and go, raises the size below
which it serves them from those arenas; so after a flood the process stays
as large as at its peak (170 MB measured, 40 MB after a trim). ``malloc_trim``
returns what is free; elsewhere (another C library) it is not there and
nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


#: ``malloc_trim(0)`` where the C library has it
_trim = _malloc_trim()


def return_free_memory() -> bool:
    """Give the allocator's free memory back to the system; False where that cannot be
    done here."""
    if _trim is None:
        return False
    _trim()
    return True
