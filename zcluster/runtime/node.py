"""Node: the blocking API, for ordinary scripts.

The node's asyncio loop runs in a background thread that owns every
socket. Control calls (start, stop, subscribe) hop to that thread and
wait. The hot paths do not: ``publish``, ``send`` and ``request``
serialize in the caller's thread and append to a bounded queue that the
loop drains in batches, so a burst of publishes costs one wake-up, not one
per message; a request's reply wakes the caller straight from the loop.
User callbacks run on a separate callback thread, in order.

``Node`` is built on :class:`AsyncNode`'s public methods only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from zcluster.application import (
    AckCallback,
    Handler,
    LossCallback,
    MemberCallback,
    SubscriptionCallback,
    reply_payload,
)
from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.delivery import DrainReport, MessageAcknowledgement, TransactionResult
from zcluster.errors import ConfigError, NotRunning
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member
from zcluster.runtime.asyncnode import AsyncNode, validate_topic
from zcluster.runtime.gate import OutboxGate
from zcluster.runtime.runners import OnError, ReadControl, ThreadRunner
from zcluster.security.config import SecurityConfig
from zcluster.serialization import Serializer

T = TypeVar("T")


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
        tags: Mapping[str, str] | None = None,
        security: SecurityConfig | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        state_sync: str = "normal",
        **options: Any,
    ) -> None:
        self._node = AsyncNode(
            node_id,
            bind,
            seeds,
            advertise,
            serializer=serializer,
            config=config,
            callbacks=self._make_runner,
            tags=tags,
            security=security,
            state_dir=state_dir,
            state_sync=state_sync,
            **options,
        )
        self.node_id = self._node.node_id
        self.config = self._node.config
        self.serializer = self._node.serializer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: ThreadRunner | None = None
        #: publishing of the current run, at most once and numbered (NotRunning until started)
        self._publish_now: Callable[[str, Any], None] = self._node.publish_at_most_once
        self._publish_numbered: Callable[[str, Any, DeliveryGuarantee], None] = lambda *args: (
            self._node.numbered_publisher()(*args)
        )

    def _make_runner(
        self, loop: asyncio.AbstractEventLoop, reading: ReadControl, on_error: OnError
    ) -> ThreadRunner:
        self._runner = ThreadRunner.for_node(loop, reading, on_error, config=self.config)
        return self._runner

    @property
    def gate(self) -> OutboxGate:
        """Places for unresolved guaranteed sends, per receiver (backpressure)."""
        return self._node.gate

    @property
    def inbound_faults(self) -> Callable[[ev.EnvelopeReceived], tuple[float, ...]] | None:
        """Fault injection for ``zcluster.testing`` (see AsyncNode)."""
        return self._node.inbound_faults

    @inbound_faults.setter
    def inbound_faults(
        self, fate: Callable[[ev.EnvelopeReceived], tuple[float, ...]] | None
    ) -> None:
        self._node.inbound_faults = fate

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
        # The lane of this run: once the node stops it raises NotRunning by itself.
        self._publish_now = self._node.publisher()
        self._publish_numbered = self._node.numbered_publisher()

    def stop(self) -> DrainReport:
        """Leave the cluster gracefully, having delivered what was accepted, close every
        socket, end the threads; see AsyncNode.stop for what it waits for and returns."""
        report = self._end(self._node.stop)
        return DrainReport() if report is None else report  # None: it was not running

    def abort(self) -> None:
        """Stop at once without leaving, as a crash would (for tests); see AsyncNode.abort."""
        self._end(self._node.abort)

    def _end(self, how: Callable[[], Coroutine[Any, Any, T]]) -> T | None:
        if self._thread is None:
            return None
        try:
            return self._call(how(), self.config.graceful_stop_max_s)
        finally:
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

    def members(self, tags: Mapping[str, str] | None = None) -> list[Member]:
        """See AsyncNode.members: every known member, or those carrying ``tags``."""
        return self._on_loop(lambda: self._node.members(tags))

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

    def reload_security(self) -> bool:
        """See AsyncNode.reload_security: read the security files again, now."""
        return self._on_loop(self._node.reload_security)

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

    def register(self, name: str, handler: Handler, *, validate: Handler | None = None) -> None:
        """Handle direct messages named ``name`` (handlers run on the callback thread);
        ``validate`` votes on transactions, see AsyncNode.register."""
        _reject_coroutine(handler)
        if validate is not None:
            _reject_coroutine(validate)
        self._node.register(name, handler, validate=validate)

    def unregister(self, name: str) -> None:
        """Stop handling messages named ``name``; see AsyncNode.unregister."""
        self._node.unregister(name)

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
        validate_topic(topic)
        self._call_or_now(self._node.subscribe(topic, callback, replay=replay))

    def unsubscribe(self, topic: str) -> None:
        self._call_or_now(self._node.unsubscribe(topic))

    def subscribe_prefix(self, prefix: str, callback: SubscriptionCallback) -> None:
        """Receive publications on every topic starting with ``prefix``; see
        AsyncNode.subscribe_prefix."""
        _reject_coroutine(callback)
        validate_topic(prefix)
        self._call_or_now(self._node.subscribe_prefix(prefix, callback))

    def unsubscribe_prefix(self, prefix: str) -> None:
        self._call_or_now(self._node.unsubscribe_prefix(prefix))

    def _call_or_now(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a registration on the loop, or here while there is no loop: it only
        touches the loop's state when the node runs."""
        if self._thread is not None:
            self._call(coro)
            return
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        raise AssertionError("a registration must not suspend")

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

        This thread sends it at once. While a subscriber's queue is full
        (``pubsub_hwm_count``) it waits for room, up to ``publish_block_max_s``
        (``timeout`` is accepted for compatibility and unused); past that the
        publication is dropped for that subscriber only, and a guaranteed one
        is fetched again from the retransmit buffer.
        """
        if guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            self._publish_now(topic, message)
            return
        self._publish_numbered(topic, message, guarantee)

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
        node, app = self._node, self._node.app
        if callback is not None:
            _reject_coroutine(callback)
        guarantee, payload, ttl_s = node.prepare_send(node_id, message, guarantee, ttl)
        if not guarantee.is_reliable:
            node.submit(ev.SendRequested(node_id, name, payload), timeout)
            return None
        app.gate.take(node_id, app.block_timeout(timeout))
        ack, event = app.register_send(node_id, name, payload, guarantee, ttl_s, callback)
        try:
            if not node.send_guaranteed(event):
                node.submit(event, timeout)
        except BaseException:
            app.forget_send(ack)
            raise
        return ack

    def request(self, node_id: str, name: str, message: Any, timeout: float | None = None) -> Any:
        """Call handler ``name`` on ``node_id`` and return its reply.

        This thread sends the request itself, and the reply wakes it straight
        from the loop: one hand-off per round trip on this side.
        """
        node = self._node
        event = node.prepare_request(node_id, name, message, timeout)
        reply = _Reply()
        node.app.expect_reply(event.request_id, reply.settle)
        try:
            if not node.send_request(event):
                node.submit(event, None)
            outcome = reply.wait(event.timeout_s + self.config.control_call_timeout_s)
        except BaseException:
            # The core ends every request it took; this is for one it never got.
            self._on_loop_soon(node.app.drop_request, event.request_id)
            raise
        return self.serializer.deserialize(outcome)

    @property
    def restored_sends(self) -> list[MessageAcknowledgement]:
        """Acknowledgements of the guaranteed sends an earlier life left unsettled, which
        this run sends again (``state_dir``); each ends in a final status."""
        return self._node.restored_sends

    def send_transaction(
        self,
        node_ids: Iterable[str],
        name: str,
        message: Any,
        *,
        timeout: float | None = None,
    ) -> TransactionResult:
        """Deliver ``message`` to handler ``name`` of every node in ``node_ids``, or of
        none; blocks until decided. See AsyncNode.send_transaction."""
        node = self._node
        event = node.prepare_transaction(node_ids, name, message, timeout)
        return self._call(node.run_transaction(event), timeout_margin=event.timeout_s)

    # ------------------------------------------------------------ plumbing

    def _call(self, coro: Coroutine[Any, Any, T], timeout_margin: float | None = None) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise NotRunning.of(self.node_id)
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

    def _on_loop_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` on the loop without waiting (nothing if the node has stopped)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(fn, *args)


class _Reply:
    """Where the loop puts a request's outcome for the thread that waits for it."""

    __slots__ = ("_arrived", "_outcome")

    def __init__(self) -> None:
        self._arrived = threading.Lock()
        self._arrived.acquire()  # released once, by settle()
        self._outcome: fx.CompleteRequest | None = None

    def settle(self, outcome: fx.CompleteRequest | None) -> None:
        self._outcome = outcome
        self._arrived.release()

    def wait(self, timeout: float) -> bytes:
        """The reply payload; raises as AsyncNode.request does."""
        if not self._arrived.acquire(timeout=timeout):
            raise TimeoutError(f"the node did not answer within {timeout:g}s")
        return reply_payload(self._outcome)


def _reject_coroutine(fn: Callable[..., Any]) -> None:
    if inspect.iscoroutinefunction(fn):
        raise ConfigError("coroutine callbacks need AsyncNode; Node runs plain functions")
