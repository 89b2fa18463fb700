"""Guaranteed delivery on real sockets: acknowledgements, failures, backpressure, loss reports."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import (
    AckStatus,
    AsyncNode,
    Backpressure,
    ConfigError,
    DeliveryGuarantee,
    MessageAcknowledgement,
    Node,
    NotRunning,
    PublicationLoss,
    UnknownMember,
)
from zcluster.testing.processes import free_port_pair

G = DeliveryGuarantee


def test_guaranteed_send_is_acknowledged_with_its_identity(trio: list[Node]) -> None:
    a, b, _ = trio
    got: list[tuple[Any, str]] = []
    b.register("work", lambda message, sender: got.append((message, sender)))
    ack = a.send("b", "work", {"n": 1})
    assert isinstance(ack, MessageAcknowledgement)
    assert ack.wait(5) is AckStatus.DELIVERED
    assert got == [({"n": 1}, "a")]
    assert (ack.sender, ack.receiver, ack.reason) == ("a", "b", "")
    assert ack.message_id.sender == "a" and ack.message_id.incarnation == a.incarnation
    assert ack.timestamp > 0 and ack.done
    assert a.send("b", "work", 2, guarantee=G.AT_MOST_ONCE) is None


def test_each_guarantee_delivers_in_order_on_a_clean_network(trio: list[Node]) -> None:
    a, b, _ = trio
    got: list[int] = []
    b.register("seq", lambda message, sender: got.append(message))
    acks = []
    for i, guarantee in enumerate([G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED] * 100):
        acks.append(a.send("b", "seq", i, guarantee=guarantee))
    assert all(ack is not None and ack.wait(10) is AckStatus.DELIVERED for ack in acks)
    assert got == list(range(300))


@pytest.mark.parametrize("guarantee", [G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED])
def test_a_burst_leaves_in_batches_and_arrives_whole_and_in_order(
    trio: list[Node], guarantee: DeliveryGuarantee
) -> None:
    """Sends that follow the first of a burst leave together (DATA_BATCH), within their
    bounds; each message is still handled (once, but for AT_LEAST_ONCE), and acknowledged
    alone; in order with ORDERED (the others promise no order: a message dropped at a
    busy receiver and sent again runs after those that followed it)."""
    a, b, _ = trio
    got: list[int] = []
    b.register("burst", lambda message, sender: got.append(message))
    # messages of 0 to ~3 KB: some batches end on bytes, some on count
    acks = [
        a.send("b", "burst", [i, "x" * (i % 7) * 500], guarantee=guarantee) for i in range(3000)
    ]
    assert all(ack is not None and ack.wait(20) is AckStatus.DELIVERED for ack in acks)
    handled = [message[0] for message in got]
    if guarantee is G.AT_LEAST_ONCE:  # a retransmission may run a handler twice
        handled = list(dict.fromkeys(handled))
    if guarantee is not G.ORDERED:
        handled.sort()
    assert handled == list(range(3000)), (a.stats(), b.stats())
    sent, received = a.stats()["reliable_batches_sent"], b.stats()["reliable_batches_received"]
    assert sent > 0 and received == sent, (a.stats(), b.stats())
    # two messages or more a batch (how many went alone, first of a burst, depends on how
    # soon the loop turned; at most 64 a batch is for test_batches)
    assert sent <= 3000 // 2


def test_async_sends_leave_in_batches_too() -> None:
    async def main() -> None:
        async with AsyncNode("a") as a, AsyncNode("b", seeds=[a.address]) as b:
            got: list[int] = []
            b.register("work", lambda message, sender: got.append(message))
            assert await a.wait_for(lambda: len(a.members()) == 2, 5)
            acks = [await a.send("b", "work", i, guarantee=G.ORDERED) for i in range(500)]
            statuses = {await ack for ack in acks if ack is not None}
            assert statuses == {AckStatus.DELIVERED}
            assert got == list(range(500))
            assert a.stats()["reliable_batches_sent"] > 0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_threads_sending_at_once_take_the_callers_path_each_in_its_order(
    trio: list[Node],
) -> None:
    """The blocking API numbers guaranteed sends into the outbox and sends them in the
    caller's thread, under the core's lock: nothing waits in the loop's queue, and each
    thread's ORDERED messages arrive in the order it sent them."""
    a, b, _ = trio
    got: list[tuple[int, int]] = []
    b.register("seq", lambda message, sender: got.append(tuple(message)))
    queued = a.stats().get("submitted_calls", 0)
    per_thread, threads = 300, 3
    acks: list[MessageAcknowledgement | None] = []

    def burst(k: int) -> None:
        for i in range(per_thread):
            acks.append(a.send("b", "seq", (k, i), guarantee=G.ORDERED))

    workers = [threading.Thread(target=burst, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(acks) == per_thread * threads
    assert all(ack is not None and ack.wait(10) is AckStatus.DELIVERED for ack in acks)
    for k in range(threads):
        assert [i for kk, i in got if kk == k] == list(range(per_thread))
    assert a.stats().get("submitted_calls", 0) == queued, "none went through the loop's queue"


def test_a_send_the_core_refuses_in_the_callers_thread_fails_with_its_reason(
    make_node: NodeFactory,
) -> None:
    """A refusal is decided in the caller's thread (nothing after it can overtake it)
    and the loop fails the acknowledgement with the core's reason."""
    node = make_node("alone")
    inner, app = node._node, node._node.app
    app.gate.take("ghost", 1.0)
    ack, event = app.register_send("ghost", "h", b"\x01", G.ORDERED, 5.0)
    assert inner.send_guaranteed(event), "decided, not handed to the loop's queue"
    assert ack.wait(5) is AckStatus.FAILED
    assert "not a member" in ack.reason
    assert app.gate.count("ghost") == 0, "its place in the outbox is given back"


def test_handler_errors_and_missing_handlers_end_failed_with_the_reason(
    trio: list[Node],
) -> None:
    a, b, _ = trio

    def broken(message: Any, sender: str) -> None:
        raise ValueError("bad input")

    b.register("broken", broken)
    failing = a.send("b", "broken", 1)
    missing = a.send("b", "nobody", 1)
    assert failing is not None and missing is not None
    assert failing.wait(5) is AckStatus.FAILED
    assert failing.reason == "handler raised ValueError: bad input"
    assert missing.wait(5) is AckStatus.FAILED
    assert "no handler named 'nobody'" in missing.reason


def test_callback_runs_once_with_the_final_status(trio: list[Node]) -> None:
    a, b, _ = trio
    b.register("work", lambda message, sender: None)
    seen: list[AckStatus] = []
    done = threading.Event()

    def callback(ack: MessageAcknowledgement) -> None:
        seen.append(ack.status)
        done.set()

    ack = a.send("b", "work", 1, callback=callback)
    assert done.wait(5)
    assert ack is not None and ack.wait(1) is AckStatus.DELIVERED
    late: list[AckStatus] = []
    ack.add_done_callback(lambda acked: late.append(acked.status))
    assert wait_until(lambda: late == [AckStatus.DELIVERED], 2)
    assert seen == [AckStatus.DELIVERED]


def test_send_to_a_crashed_node_expires_after_its_ttl(make_node: NodeFactory) -> None:
    a = make_node("a")
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    b.abort()
    ack = a.send("b", "work", 1, ttl=1.0)
    assert ack is not None
    assert ack.wait(5) is AckStatus.EXPIRED
    assert "ttl" in ack.reason


def test_a_down_receiver_that_comes_back_gets_what_was_sent_meanwhile(
    make_node: NodeFactory,
) -> None:
    a = make_node("a")
    # Ports taken together: the restart binds the same pair (the PUB at the next port).
    b = make_node("b", a, bind=f"127.0.0.1:{free_port_pair()}")
    assert wait_until(lambda: all_up([a, b]), 5)
    address = b.address
    b.abort()
    assert wait_until(lambda: str(a.member("b").status) == "down", 5)  # type: ignore[union-attr]
    ack = a.send("b", "work", "while you were out")
    assert ack is not None and ack.status is AckStatus.PENDING
    got: list[str] = []
    again = make_node("b", a, bind=address, start=False)
    again.register("work", lambda message, sender: got.append(message))
    again.start()
    assert ack.wait(10) is AckStatus.DELIVERED
    assert got == ["while you were out"]


def test_full_outbox_raises_backpressure_and_spares_healthy_receivers(
    make_node: NodeFactory,
) -> None:
    a = make_node("a", outbox_max_count=50)
    b = make_node("b", a)
    c = make_node("c", a)
    assert wait_until(lambda: all_up([a, b, c]), 5)
    release = threading.Event()
    b.register("stuck", lambda message, sender: release.wait(10))
    c.register("fine", lambda message, sender: None)
    stuck = [a.send("b", "stuck", i) for i in range(50)]
    with pytest.raises(Backpressure, match="outbox_max_count"):
        a.send("b", "stuck", 50, timeout=0)
    with pytest.raises(Backpressure):
        a.send("b", "stuck", 50, timeout=0.2)
    fine = [a.send("c", "fine", i) for i in range(200)]
    assert all(ack is not None and ack.wait(10) is AckStatus.DELIVERED for ack in fine)
    release.set()
    assert all(ack is not None and ack.wait(10) is AckStatus.DELIVERED for ack in stuck)
    ack = a.send("b", "stuck", 51, timeout=0)
    assert ack is not None and ack.wait(5) is AckStatus.DELIVERED


def test_unavailable_guarantees_and_bad_arguments_are_refused(trio: list[Node]) -> None:
    a, _, _ = trio
    for guarantee in (G.TRANSACTIONAL,):
        with pytest.raises(ConfigError, match="use send_transaction"):
            a.send("b", "work", 1, guarantee=guarantee)
        with pytest.raises(ConfigError, match="use send_transaction"):
            a.publish("t", 1, guarantee=guarantee)
    with pytest.raises(ConfigError, match="ttl"):
        a.send("b", "work", 1, ttl=0)
    with pytest.raises(ConfigError, match="dedup_window_s"):
        a.send("b", "work", 1, guarantee=G.EXACTLY_ONCE, ttl=10_000)
    with pytest.raises(ConfigError, match="DeliveryGuarantee"):
        a.send("b", "work", 1, guarantee="exactly_once")  # type: ignore[arg-type]
    with pytest.raises(UnknownMember):
        a.send("ghost", "work", 1)


def test_stopping_the_sender_waits_for_acknowledgements_then_fails_what_is_pending(
    make_node: NodeFactory,
) -> None:
    a = make_node("a", drain_timeout_s=0.5)
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    b.register("quick", lambda message, sender: None)
    release = threading.Event()
    b.register("stuck", lambda message, sender: release.wait(5))
    quick = a.send("b", "quick", 1)
    stuck = a.send("b", "stuck", 2)
    began = time.monotonic()
    report = a.stop()
    waited = time.monotonic() - began
    release.set()
    assert quick is not None and quick.status is AckStatus.DELIVERED  # waited for, at stop
    assert stuck is not None and stuck.wait(1) is AckStatus.FAILED
    assert "stopped" in stuck.reason
    assert report.sends_unacknowledged == 1 and not report.complete
    assert 0.5 <= waited < 3, waited


def test_async_acks_are_awaitable() -> None:
    async def main() -> None:
        async with AsyncNode("a") as a, AsyncNode("b", seeds=[a.address]) as b:
            got: list[int] = []

            async def work(message: int, sender: str) -> None:
                await asyncio.sleep(0)
                got.append(message)

            b.register("work", work)
            assert await a.wait_for(lambda: len(a.members()) == 2, 5)
            acks = [await a.send("b", "work", i, guarantee=G.ORDERED) for i in range(20)]
            statuses = [await ack for ack in acks if ack is not None]
            assert statuses == [AckStatus.DELIVERED] * 20
            assert got == list(range(20))

    asyncio.run(asyncio.wait_for(main(), 30))


def test_lost_publications_are_reported_to_the_subscriber(make_node: NodeFactory) -> None:
    a = make_node("a", retransmit_buffer_count=5)
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    losses: list[PublicationLoss] = []
    got: list[int] = []
    b.on_publication_loss(losses.append)

    def drop_middle(event: Any) -> tuple[float, ...]:
        # PUBLISH numbers 3..40 never arrive
        if event.topic == "t" and 3 <= event.envelope.message.seq <= 40:
            return ()
        return (0.0,)

    b.inbound_faults = drop_middle
    b.subscribe("t", lambda topic, message, sender: got.append(message))
    assert wait_until(lambda: "b" in a.subscribers("t"), 5)
    for i in range(1, 51):
        a.publish("t", i, guarantee=G.ORDERED)
    assert wait_until(lambda: len(got) + sum(x.count for x in losses) == 50, 10), (got, losses)
    lost = {n for x in losses for n in range(x.first, x.last + 1)}
    assert lost.isdisjoint(got) and lost | set(got) == set(range(1, 51))
    assert got == sorted(got)  # ORDERED: in order, with the lost ones skipped
    assert b.stats()["publications_lost"] == len(lost) > 0


def test_async_send_waits_for_room_then_raises_backpressure() -> None:
    async def main() -> None:
        async with AsyncNode("a", outbox_max_count=3) as a, AsyncNode("b", seeds=[a.address]) as b:
            release = asyncio.Event()

            async def stuck(message: int, sender: str) -> None:
                await release.wait()

            b.register("stuck", stuck)
            assert await a.wait_for(lambda: len(a.members()) == 2, 5)
            acks = [await a.send("b", "stuck", i) for i in range(3)]
            with pytest.raises(Backpressure):
                await a.send("b", "stuck", 3, timeout=0)
            waiting = asyncio.ensure_future(a.send("b", "stuck", 3, timeout=5))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # suspended, the loop keeps running
            release.set()
            last = await waiting
            assert last is not None and await last is AckStatus.DELIVERED
            assert [await ack for ack in acks if ack is not None] == [AckStatus.DELIVERED] * 3

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_slow_handler_does_not_hold_back_the_acks_of_earlier_ones(trio: list[Node]) -> None:
    a, b, _ = trio
    release = threading.Event()
    b.register("h", lambda message, sender: release.wait(10) if message == "slow" else None)
    fast = [a.send("b", "h", f"fast{i}") for i in range(20)]
    slow = a.send("b", "h", "slow")
    try:
        assert all(ack is not None and ack.wait(5) is AckStatus.DELIVERED for ack in fast)
        assert slow is not None and slow.status is AckStatus.PENDING
    finally:
        release.set()
    assert slow.wait(5) is AckStatus.DELIVERED


def test_an_await_given_up_on_a_closed_loop_breaks_nothing(trio: list[Node]) -> None:
    a, b, _ = trio
    release = threading.Event()
    b.register("h", lambda message, sender: release.wait(10))
    first, second = a.send("b", "h", 1), a.send("b", "h", 2)
    assert first is not None and second is not None

    async def impatient() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(first, 0.1)

    asyncio.run(impatient())  # that loop is closed when the acks resolve
    release.set()
    assert first.wait(5) is AckStatus.DELIVERED and second.wait(5) is AckStatus.DELIVERED
    assert a.gate.count("b") == 0


def test_a_send_waiting_for_room_when_the_node_stops_is_refused_cleanly() -> None:
    async def main() -> None:
        async with (
            AsyncNode("a", outbox_max_count=1, drain_timeout_s=0.5) as a,
            AsyncNode("b", seeds=[a.address]) as b,
        ):
            release = asyncio.Event()

            async def stuck(message: int, sender: str) -> None:
                await release.wait()

            b.register("stuck", stuck)
            assert await a.wait_for(lambda: len(a.members()) == 2, 5)
            first = await a.send("b", "stuck", 1)
            waiting = asyncio.ensure_future(a.send("b", "stuck", 2, timeout=10))
            await asyncio.sleep(0.1)
            await a.stop()
            with pytest.raises(NotRunning):
                await waiting
            assert first is not None and await first is AckStatus.FAILED
            assert a.gate.count("b") == 0
            release.set()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_receiver_that_stops_gracefully_confirms_what_it_handled(
    make_node: NodeFactory,
) -> None:
    a = make_node("a")
    # Handlers take 0.6 s in all; a loaded machine must not turn waiting into giving up.
    b = make_node("b", a, leave_timeout_s=5.0)
    assert wait_until(lambda: all_up([a, b]), 5)
    started = threading.Event()

    def handler(message: int, sender: str) -> None:
        started.set()
        time.sleep(0.2)

    b.register("h", handler)
    acks = [a.send("b", "h", i) for i in range(3)]
    assert started.wait(5)
    # All three taken (a later one, still on its way when b leaves, would rightly FAIL).
    assert wait_until(lambda: b.stats().get("reliable_delivered", 0) == 3, 5)
    b.stop()  # leaves while the first handler runs
    assert [ack.wait(5) for ack in acks if ack is not None] == [AckStatus.DELIVERED] * 3
