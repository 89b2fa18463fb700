"""Large frames decode with the cycle collector paused, and its state is always restored."""

from __future__ import annotations

import gc

import pytest

from zcluster.uncollected import LARGE_FRAME_BYTES, decode_large


def _collector_state_while(data: bytes) -> bool:
    return decode_large(lambda _: gc.isenabled(), data)


def test_the_collector_is_paused_only_for_large_frames_and_back_after() -> None:
    assert gc.isenabled()
    assert _collector_state_while(b"x" * LARGE_FRAME_BYTES) is True
    assert _collector_state_while(b"x" * (LARGE_FRAME_BYTES + 1)) is False
    assert gc.isenabled()


def test_the_collector_comes_back_when_decoding_raises() -> None:
    def fails(_: bytes) -> None:
        raise ValueError("garbage")

    with pytest.raises(ValueError):
        decode_large(fails, b"x" * (LARGE_FRAME_BYTES + 1))
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    gc.disable()
    try:
        decode_large(lambda _: None, b"x" * (LARGE_FRAME_BYTES + 1))
        assert not gc.isenabled()
    finally:
        gc.enable()
