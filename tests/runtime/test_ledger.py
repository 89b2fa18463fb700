"""The ledger of payload bytes waiting for user code: the total and each sender's share
are bounded, reading pauses at the total and resumes at half of it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from zcluster.runtime.ledger import MESSAGE_OVERHEAD_BYTES, STRANGERS, Ledger


def test_a_senders_share_fills_without_touching_the_others() -> None:
    ledger = Ledger(max_bytes=10_000, sender_max_bytes=2_000)
    costs = [ledger.charge("flooder", 1_000) for _ in range(2)]
    assert not ledger.has_room("flooder")
    assert ledger.has_room("healthy") and ledger.has_room(STRANGERS)
    ledger.release("flooder", costs[0])
    assert ledger.has_room("flooder")
    assert ledger.held_by("flooder") == 1_000 + MESSAGE_OVERHEAD_BYTES


def test_the_total_pauses_reading_and_half_of_it_resumes_it() -> None:
    ledger = Ledger(max_bytes=4_000, sender_max_bytes=4_000)
    told: list[str] = []
    ledger.on_full = lambda: told.append("full")
    ledger.on_room = lambda: told.append("room")
    costs = [ledger.charge(f"s{i}", 1_000) for i in range(4)]
    assert told == ["full"] and not ledger.has_room("anyone")
    ledger.release("s0", costs[0])
    assert told == ["full"], "resumed before half was free"
    for i in (1, 2):
        ledger.release(f"s{i}", costs[i])
    assert told == ["full", "room"]
    ledger.release("s3", costs[3])
    assert ledger.total_bytes == 0 and ledger.held_by("s3") == 0


def test_a_charged_call_is_released_when_it_raises() -> None:
    ledger = Ledger(max_bytes=10_000, sender_max_bytes=10_000)

    def fails() -> None:
        raise ValueError("handler bug")

    call = ledger.charged("a", 500, fails)
    assert ledger.held_by("a") == 500 + MESSAGE_OVERHEAD_BYTES
    with pytest.raises(ValueError):
        call()
    assert ledger.total_bytes == 0


def test_charges_and_releases_from_two_threads_balance() -> None:
    ledger = Ledger(max_bytes=1 << 40, sender_max_bytes=1 << 40)
    costs = [ledger.charge("a", i) for i in range(20_000)]
    releaser = threading.Thread(target=lambda: [ledger.release("a", c) for c in costs[::2]])
    releaser.start()
    for cost in costs[1::2]:
        ledger.release("a", cost)
    releaser.join()
    assert ledger.total_bytes == 0 and ledger.held_by("a") == 0


def test_a_coroutine_callback_is_charged_until_it_is_done() -> None:
    ledger = Ledger(max_bytes=10_000, sender_max_bytes=10_000)
    gate = asyncio.Event()

    async def handler() -> str:
        await gate.wait()
        return "done"

    async def body() -> None:
        task = asyncio.ensure_future(ledger.charged("a", 100, handler)())  # type: ignore[arg-type]
        await asyncio.sleep(0)
        assert ledger.held_by("a") == 100 + MESSAGE_OVERHEAD_BYTES  # created, not done
        gate.set()
        assert await task == "done"
        assert ledger.total_bytes == 0
        stopped = asyncio.ensure_future(ledger.charged("b", 100, handler)())  # type: ignore[arg-type]
        gate.clear()
        await asyncio.sleep(0)
        stopped.cancel()  # the node stopping
        with pytest.raises(asyncio.CancelledError):
            await stopped
        assert ledger.total_bytes == 0

    asyncio.run(body())
