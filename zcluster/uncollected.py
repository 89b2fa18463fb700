"""Decoding large untrusted data without Python's cycle collector running meanwhile.

Decoding allocates one container per list or map, and every 700 of them the
collector runs: a megabyte of msgpack holding a million empty lists took 167 ms
to decode, 37 ms with the collector off (measured), and held the GIL all along,
so the node's loop waited. Decoded data holds no cycles to collect, so the
collector is paused for the decode of a large frame and resumed after it.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: frames up to this size decode with the collector as it is (too few objects to matter)
LARGE_FRAME_BYTES = 64 * 1024


def decode_large(decode: Callable[[bytes], T], data: bytes) -> T:
    """``decode(data)``, with the cycle collector paused while it runs if ``data`` is
    large and the collector is on (it is left off if something else turned it off)."""
    if len(data) <= LARGE_FRAME_BYTES or not gc.isenabled():
        return decode(data)
    gc.disable()
    try:
        return decode(data)
    finally:
        gc.enable()
