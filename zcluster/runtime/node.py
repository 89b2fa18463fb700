"""Node: the blocking API, for ordinary scripts.

The node's asyncio loop runs in a background thread that owns every
socket. Control calls (start, stop, request, subscribe) hop to that thread
and wait. The hot paths do not: ``publish`` and ``send`` serialize in the
caller's thread and append to a bounded queue that the loop drains in
batches, so a burst of publishes costs one wake-up, not one per message.
User callbacks run on a separate callback thread, in order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from zcluster.config import NodeConfig
from zcluster.core import events as ev
from zcluster.core.guarantees import DeliveryGuarantee
from zcluster.core.members import Member
from zcluster.delivery import MessageAcknowledgement
from zcluster.errors import Backpressure, ConfigError, NotRunning
from zcluster.runtime.asyncnode import (
    AckCallback,
    AsyncNode,
    Handler,
    LossCallback,
    MemberCallback,
    SubscriptionCallback,
    _validate_topic,
)
from zcluster.runtime.driver import Driver
from zcluster.runtime.runners import ThreadRunner
from zcluster.serialization import Serializer

T = TypeVar("T")


class _Submitter:
    """A bounded queue from caller threads to the loop, drained in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, driver: Driver, max_count: int) -> None:
        self._loop = loop
        self._driver = driver
        self._max_count = max_count
        self._items: collections.deque[ev.Event] = collections.deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._scheduled = False

    def submit(self, event: ev.Event, timeout: float | None) -> None:
        with self._lock:
            if len(self._items) >= self._max_count and not self._not_full.wait_for(
                lambda: len(self._items) < self._max_count, timeout
            ):
                raise Backpressure(f"{self._max_count} calls already queued to the node")
            self._items.append(event)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._scheduled = False
            self._not_full.notify_all()
        counters = self._driver.counters
        counters["submit_batches"] += 1
        counters["submitted_calls"] += len(items)
        self._driver.feed_many(items)


class Node:
    """A cluster node for scripts: ``with Node("a") as node: ...``.

    Same operations as :class:`AsyncNode`, as plain blocking calls.
    """

    def __init__(
        self,
        node_id: str,
        bind: str = "127.0.0.1:0",
        seeds: Iterable[str] = (),
        advertise: str | None = None,
        *,
        serializer: Serializer | None = None,
        config: NodeConfig | None = None,
        **options: Any,
    ) -> None:
        self._node = AsyncNode(
            node_id, bind, seeds, advertise, serializer=serializer, config=config, **options
        )
        self._node._runner_factory = self._make_runner
        self.node_id = self._node.node_id
        self.config = self._node.config
        self.serializer = self._node.serializer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._submitter: _Submitter | None = None
        self._runner: ThreadRunner | None = None

    def _make_runner(self, loop: asyncio.AbstractEventLoop, driver: Driver) -> ThreadRunner:
        self._runner = ThreadRunner(
            loop,
            self._node._count_error,
            self.config.callback_queue_max_count,
            driver.pause_reading,
            driver.resume_reading,
            self.config.control_call_timeout_s,
        )
        return self._runner

    # ------------------------------------------------------------ life cycle

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Bind, start joining and (with ``wait``) return once joined; see AsyncNode.start."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"zcluster-{self.node_id}", daemon=True)
        self._thread.start()
        ready.wait()
        join_limit = self.config.join_timeout_s if timeout is None else timeout
        try:
            self._call(self._node.start(wait=wait, timeout=join_limit), timeout_margin=join_limit)
        except BaseException:
            self._shutdown_loop()
            raise
        driver = self._node._driver
        assert driver is not None
        self._submitter = _Submitter(loop, driver, self.config.submit_queue_max_count)

    def stop(self) -> None:
        """Leave the cluster gracefully, close every socket, end the threads."""
        self._end(self._node.stop)

    def abort(self) -> None:
        """Stop at once without leaving, as a crash would (for tests); see AsyncNode.abort."""
        self._end(self._node.abort)

    def _end(self, how: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._thread is None:
            return
        try:
            self._call(how())
        finally:
            self._submitter = None
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def finish() -> None:
            await loop.shutdown_default_executor()
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(finish()))
        thread.join(self.config.control_call_timeout_s)
        if not thread.is_alive():
            loop.close()
        if self._runner is not None:
            self._runner.join()
            self._runner = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._node.running

    # ------------------------------------------------------------ queries

    @property
    def address(self) -> str:
        return self._on_loop(lambda: self._node.address)

    @property
    def pub_address(self) -> str:
        return self._on_loop(lambda: self._node.pub_address)

    @property
    def incarnation(self) -> int:
        return self._node.incarnation

    def members(self) -> list[Member]:
        return self._on_loop(self._node.members)

    def member(self, node_id: str) -> Member | None:
        return self._on_loop(lambda: self._node.member(node_id))

    def view_digest(self) -> str:
        return self._on_loop(self._node.view_digest)

    def subscribers(self, topic: str) -> frozenset[str]:
        return self._on_loop(lambda: self._node.subscribers(topic))

    def listeners(self) -> frozenset[str]:
        return self._on_loop(self._node.listeners)

    def stats(self) -> dict[str, int]:
        return self._on_loop(self._node.stats)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate()`` in this thread until true; False once ``timeout`` seconds pass.

        The predicate may use this node's blocking methods.
        """
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.config.tick_interval_s)
        return True

    # ------------------------------------------------------------ registration

    def register(self, name: str, handler: Handler) -> None:
        """Handle direct messages named ``name`` (handlers run on the callback thread)."""
        _reject_coroutine(handler)
        self._node.register(name, handler)

    def on_member_change(self, callback: MemberCallback) -> None:
        _reject_coroutine(callback)
        self._node.on_member_change(callback)

    def on_publication_loss(self, callback: LossCallback) -> None:
        """Call ``callback(loss)`` when guaranteed publications are lost for good."""
        _reject_coroutine(callback)
        self._node.on_publication_loss(callback)

    def subscribe(
        self, topic: str, callback: SubscriptionCallback, *, replay: bool = False
    ) -> None:
        """Receive publications on ``topic``; see AsyncNode.subscribe (``replay``)."""
        _reject_coroutine(callback)
        _validate_topic(topic)
        if self._thread is None:
            self._node._subscribe(topic, callback, replay)
        else:
            self._call(self._node.subscribe(topic, callback, replay=replay))

    def unsubscribe(self, topic: str) -> None:
        if self._thread is None:
            self._node._subscriptions.pop(topic, None)
        else:
            self._call(self._node.unsubscribe(topic))

    # ------------------------------------------------------------ messaging

    def publish(
        self,
        topic: str,
        message: Any,
        *,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE,
        timeout: float | None = None,
    ) -> None:
        """Publish ``message`` on ``topic``; see AsyncNode.publish for ``guarantee``.

        Blocks only while the node's queue is full; raises Backpressure if it
        stays full for ``timeout`` seconds.
        """
        event = self._node._publication(topic, message, guarantee)
        self._submit().submit(event, timeout)

    def send(
        self,
        node_id: str,
        name: str,
        message: Any,
        *,
        guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_LEAST_ONCE,
        ttl: float | None = None,
        callback: AckCallback | None = None,
        timeout: float | None = None,
    ) -> MessageAcknowledgement | None:
        """Send ``message`` to handler ``name`` on ``node_id``; see AsyncNode.send.

        Returns a MessageAcknowledgement (``ack.wait(timeout)``) for a guaranteed
        send, None for AT_MOST_ONCE. Blocks up to ``timeout`` while the outbox to
        ``node_id`` (or the node's queue) is full, then raises Backpressure.
        """
        node = self._node
        if callback is not None:
            _reject_coroutine(callback)
        guarantee, payload, ttl_s = node._prepared_send(node_id, message, guarantee, ttl)
        submitter = self._submit()
        if not guarantee.is_reliable:
            submitter.submit(ev.SendRequested(node_id, name, payload), timeout)
            return None
        node.gate.take(node_id, node._block_timeout(timeout))
        ack, event = node._guaranteed(node_id, name, payload, guarantee, ttl_s, callback)
        try:
            submitter.submit(event, timeout)
        except BaseException:
            node._acks.pop(ack.message_id.number, None)
            node.gate.release(node_id)
            raise
        return ack

    def request(self, node_id: str, name: str, message: Any, timeout: float | None = None) -> Any:
        """Call handler ``name`` on ``node_id`` and return its reply."""
        limit = self.config.request_timeout_s if timeout is None else timeout
        return self._call(self._node.request(node_id, name, message, limit), timeout_margin=limit)

    # ------------------------------------------------------------ plumbing

    def _submit(self) -> _Submitter:
        if self._submitter is None:
            raise NotRunning(f"node {self.node_id} is not running")
        return self._submitter

    def _call(self, coro: Coroutine[Any, Any, T], timeout_margin: float | None = None) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise NotRunning(f"node {self.node_id} is not running")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        limit = self.config.control_call_timeout_s + (timeout_margin or 0.0)
        # Wait first, then read: the call itself may raise a TimeoutError subclass.
        done, _ = concurrent.futures.wait([future], limit)
        if not done:
            future.cancel()
            raise TimeoutError(f"node {self.node_id} did not answer within {limit:g}s")
        return future.result()

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return self._call(call())


def _reject_coroutine(fn: Callable[..., Any]) -> None:
    if inspect.iscoroutinefunction(fn):
        raise ConfigError("coroutine callbacks need AsyncNode; Node runs plain functions")
