"""Where user callbacks run.

``InlineRunner`` (asyncio API) calls them on the node's loop and awaits
coroutines as tasks. ``ThreadRunner`` (blocking API) calls them, in order,
on one worker thread, so a slow handler never delays heartbeats; when its
queue is full the node stops reading sockets until it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from zcluster.config import NodeConfig

Call = Callable[[], Any]
Done = Callable[[Any, BaseException | None], None]
#: a callback without an outcome handler raised (those with one get the exception)
OnError = Callable[[BaseException], None]


class ReadControl(Protocol):
    """Stopping and resuming reading publications (a full callback queue pauses it)."""

    def pause_reading(self, why: str = ...) -> None: ...

    def resume_reading(self, why: str = ...) -> None: ...


class AnyThread:
    """A completion that may run in whichever thread ran its call.

    A request's reply is sent from there at once (``ThreadRunner`` would
    otherwise hand it back to the loop first: one thread hop per round trip).
    """

    __slots__ = ("_done",)

    def __init__(self, done: Done) -> None:
        self._done = done

    def __call__(self, result: Any, exc: BaseException | None) -> None:
        self._done(result, exc)


class Runner(Protocol):
    def run(self, call: Call, done: Done | None) -> None: ...

    def run_each(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        """Run ``fn(item)`` for each of ``items`` as ``run`` would, with no outcome;
        consecutive ones with the same ``fn`` may be handed over as one call
        (publications: one per drain). ``items`` is the runner's from then on."""

    def close(self) -> None: ...


class InlineRunner:
    """Runs callbacks on the event loop; coroutines become tasks. While ``max_count``
    tasks are unfinished, the node stops reading publications (as ThreadRunner does
    while that many calls wait), until half of them finished."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_error: OnError,
        max_count: int | None = None,
        reading: ReadControl | None = None,
    ) -> None:
        self._loop = loop
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()
        self._max_count = max_count
        self._reading = reading
        self._paused = False

    def run(self, call: Call, done: Done | None) -> None:
        try:
            result = call()
        except Exception as exc:
            self._finish(done, None, exc)
            return
        if inspect.isawaitable(result):
            task = self._loop.create_task(_await(result))
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._task_done(t, done))
            if self._reading is not None and len(self._tasks) == self._max_count:
                self._paused = True
                self._reading.pause_reading()
        else:
            self._finish(done, result, None)

    def run_each(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        for item in items:
            self.run(functools.partial(fn, item), None)

    def _task_done(self, task: asyncio.Task[Any], done: Done | None) -> None:
        self._tasks.discard(task)
        if self._paused and self._max_count and len(self._tasks) <= self._max_count // 2:
            self._paused = False
            if self._reading is not None:
                self._reading.resume_reading()
        if task.cancelled():
            return
        exc = task.exception()
        self._finish(done, None if exc else task.result(), exc)

    def _finish(self, done: Done | None, result: Any, exc: BaseException | None) -> None:
        if done is not None:
            done(result, exc)
        elif exc is not None:
            self._on_error(exc)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()


class _Each:
    """``fn(item)`` for each item, in order, as one call; each failure counted and logged."""

    __slots__ = ("fn", "items", "on_error")

    def __init__(self, fn: Callable[[Any], Any], items: list[Any], on_error: OnError):
        self.fn = fn
        self.items = items
        self.on_error = on_error

    def __call__(self) -> None:
        fn = self.fn
        for item in self.items:
            try:
                fn(item)
            except Exception as error:
                self.on_error(error)


async def _await(awaitable: Any) -> Any:
    return await awaitable


class ThreadRunner:
    """Runs callbacks in order on one worker thread, off the event loop.

    Calls made during one turn of the loop are handed over as one batch, so
    the worker thread is woken once per socket drain, not once per message.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_error: OnError,
        max_count: int,
        pause: Callable[[], None],
        resume: Callable[[], None],
        join_timeout_s: float,
    ) -> None:
        self._loop = loop
        self._on_error = on_error
        self._max_count = max_count
        self._pause = pause
        self._resume = resume
        self._join_timeout_s = join_timeout_s
        self._paused = False
        self._pending: list[tuple[Call, Done | None]] = []
        self._pending_count = 0  # calls in _pending, each of a batch counted
        self._queued = 0  # calls handed to the worker and not yet run
        #: calls handed over while the worker is busy, which it takes when done with
        #: its batch (no wake-up); None while it is idle, and the next hand-over wakes it
        self._staged: list[tuple[Call, Done | None]] | None = None
        self._staged_count = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[list[tuple[Call, Done | None]], int] | None] = (
            queue.SimpleQueue()
        )
        #: outcomes (request replies, acknowledgements) waiting for the loop, in order
        self._outcomes: list[tuple[Done, Any, BaseException | None]] = []
        self._thread = threading.Thread(target=self._work, name="zcluster-callbacks", daemon=True)
        self._thread.start()

    @classmethod
    def for_node(
        cls,
        loop: asyncio.AbstractEventLoop,
        reading: ReadControl,
        on_error: OnError,
        *,
        config: NodeConfig,
    ) -> ThreadRunner:
        """The runner of a node's callbacks (a RunnerFactory, given the node's config)."""
        return cls(
            loop,
            on_error,
            config.callback_queue_max_count,
            reading.pause_reading,
            reading.resume_reading,
            config.control_call_timeout_s,
        )

    def run(self, call: Call, done: Done | None) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((call, done))
        self._pending_count += 1

    def run_each(self, fn: Callable[[Any], Any], items: list[Any]) -> None:
        pending = self._pending
        self._pending_count += len(items)
        if pending:
            last = pending[-1][0]
            if type(last) is _Each and last.fn is fn:
                last.items.extend(items)
                return
        else:
            self._loop.call_soon(self._flush)
        pending.append((_Each(fn, items, self._on_error), None))

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        count, self._pending_count = self._pending_count, 0
        if not batch:
            return
        with self._lock:
            self._queued += count
            pause = self._queued >= self._max_count and not self._paused
            if pause:
                self._paused = True  # before the worker can see the batch and test the flag
            staged = self._staged
            wake = staged is None
            if staged is None:
                self._staged = []
            else:
                staged.extend(batch)
                self._staged_count += count
        if wake:
            self._queue.put((batch, count))
        if pause:
            self._pause()

    def _work(self) -> None:
        while True:
            handed = self._queue.get()
            if handed is None:
                return
            batch, count = handed
            while batch:
                self._run_batch(batch)
                with self._lock:
                    self._queued -= count
                    resume = self._paused and self._queued <= self._max_count // 2
                    if resume:
                        self._paused = False
                    # What was handed over meanwhile, or idle again (the next one wakes us).
                    batch, count = self._staged or [], self._staged_count
                    self._staged = [] if batch else None
                    self._staged_count = 0
                if resume:
                    self._call_on_loop(self._resume)  # runs after any pause() already under way

    def _run_batch(self, batch: list[tuple[Call, Done | None]]) -> None:
        for call, done in batch:
            try:
                result, exc = call(), None
            except Exception as error:
                result, exc = None, error
                if done is None:
                    self._on_error(error)
            if type(done) is AnyThread:
                done(result, exc)
            elif done is not None:
                self._completed(done, result, exc)

    def _completed(self, done: Done, result: Any, exc: BaseException | None) -> None:
        """Hand an outcome to the loop at once, without a wake-up per outcome: only the
        first of those waiting schedules the hand-over, which takes them all."""
        with self._lock:
            first = not self._outcomes
            self._outcomes.append((done, result, exc))
        if first:
            self._call_on_loop(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        for done, result, exc in outcomes:
            done(result, exc)

    def _call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the node has stopped
            self._loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Let the worker finish what is queued, then end; see ``join``."""
        self._flush()
        self._queue.put(None)

    def join(self) -> None:
        """Wait for the worker to end, unless called from the worker itself (a handler)."""
        if threading.current_thread() is not self._thread:
            self._thread.join(self._join_timeout_s)
