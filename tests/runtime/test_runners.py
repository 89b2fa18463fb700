"""Where callbacks run: order, batching of publications and failures, on a real event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from tests.helpers import wait_until
from zcluster.runtime.runners import InlineRunner, ThreadRunner


def run_on_a_loop(body: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(body(loop), 10))
    finally:
        loop.close()


def test_publications_batched_keep_their_place_among_other_calls() -> None:
    seen: list[object] = []
    errors: list[int] = []
    paused: list[str] = []

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        runner = ThreadRunner(
            loop,
            lambda exc: errors.append(1),
            max_count=1_000_000,
            pause=lambda: paused.append("pause"),
            resume=lambda: paused.append("resume"),
            join_timeout_s=5,
        )

        def each(item: int) -> None:
            if item == 3:
                raise ValueError("a failing callback")
            seen.append(item)

        other = each.__call__  # another function: a batch of its own
        for item in range(5):
            runner.run_each(each, [item])
        runner.run(lambda: seen.append("call"), None)
        for item in range(5, 8):
            runner.run_each(each, [item])
        runner.run_each(other, [8])
        runner.run_each(each, [9])
        await asyncio.sleep(0)  # the turn ends: one hand-over
        assert await asyncio.to_thread(wait_until, lambda: len(seen) == 10, 5), seen
        runner.close()
        runner.join()

    run_on_a_loop(body)
    assert seen == [0, 1, 2, 4, "call", 5, 6, 7, 8, 9]
    assert errors == [1], "the failure counted once, the others ran"
    assert paused == []


def test_a_full_queue_counts_each_publication() -> None:
    """Backpressure counts the publications of a batch, not the batch."""
    paused: list[str] = []
    release = threading.Event()

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        runner = ThreadRunner(
            loop,
            lambda exc: None,
            max_count=100,
            pause=lambda: paused.append("pause"),
            resume=lambda: paused.append("resume"),
            join_timeout_s=5,
        )
        runner.run(lambda: release.wait(5), None)  # the worker is busy
        for item in range(150):
            runner.run_each(_nothing, [item])
        await asyncio.sleep(0)
        assert paused == ["pause"]
        release.set()
        assert await asyncio.to_thread(wait_until, lambda: paused == ["pause", "resume"], 5)
        runner.close()
        runner.join()

    run_on_a_loop(body)


def _nothing(_: object) -> None:
    return None


def test_inline_runner_calls_each_at_once() -> None:
    seen: list[int] = []

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        runner = InlineRunner(loop, lambda exc: None)
        runner.run_each(seen.append, [1])
        runner.run_each(seen.append, [2])
        assert seen == [1, 2]

    run_on_a_loop(body)


class _Reading:
    def __init__(self) -> None:
        self.told: list[str] = []

    def pause_reading(self, why: str = "callbacks") -> None:
        self.told.append("pause")

    def resume_reading(self, why: str = "callbacks") -> None:
        self.told.append("resume")


def test_inline_runner_pauses_reading_while_too_many_coroutines_run() -> None:
    reading = _Reading()

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        runner = InlineRunner(loop, lambda exc: None, max_count=4, reading=reading)
        gates = [asyncio.Event() for _ in range(4)]
        for gate in gates:
            runner.run(gate.wait, None)
        assert reading.told == ["pause"]
        for gate in gates[:2]:
            gate.set()
        await asyncio.sleep(0.01)
        assert reading.told == ["pause", "resume"]  # half of them finished
        for gate in gates[2:]:
            gate.set()
        await asyncio.sleep(0.01)
        assert reading.told == ["pause", "resume"]

    run_on_a_loop(body)


def test_calls_handed_over_while_the_worker_is_busy_run_in_order() -> None:
    """Later hand-overs wait for the busy worker without waking it, and all run in order,
    the last ones too when the runner closes."""
    seen: list[int] = []
    release = threading.Event()

    async def body(loop: asyncio.AbstractEventLoop) -> None:
        runner = ThreadRunner(
            loop,
            lambda exc: None,
            max_count=1000,
            pause=lambda: None,
            resume=lambda: None,
            join_timeout_s=5,
        )
        runner.run(lambda: release.wait(5), None)
        await asyncio.sleep(0)  # handed over: the worker is now busy
        for turn in range(5):
            for item in range(3):
                runner.run_each(seen.append, [turn * 3 + item])
            runner.run(lambda turn=turn: seen.append(100 + turn), None)
            await asyncio.sleep(0)  # one hand-over per turn
        release.set()
        runner.close()
        await asyncio.to_thread(runner.join)

    run_on_a_loop(body)
    expected: list[int] = []
    for turn in range(5):
        expected += [turn * 3, turn * 3 + 1, turn * 3 + 2, 100 + turn]
    assert seen == expected
