"""Guaranteed direct delivery: a sender that left or was removed, outcomes in the
exactly-once window, and how long the window keeps an id (docs/delivery.md).

The bookkeeping is tested on the receiver and sender alone; what needs membership,
time and a network runs on the simulated one.
"""

from __future__ import annotations

from collections import Counter

from tests.helpers import exactly_once_copy_after_forgetting, sim_cluster
from zcluster import AckStatus, MemberStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.core import effects as fx
from zcluster.core.dedup import DedupWindow
from zcluster.core.inbound import DirectReceiver
from zcluster.protocol import messages as msg
from zcluster.testing.sim import SimNetwork


def receiver(**options: object) -> DirectReceiver:
    return DirectReceiver(NodeConfig().replace(**options), Counter(), first_stream_id=0)


def data(seq: int, guarantee: G = G.AT_LEAST_ONCE, low: int = 1, epoch: int = 1) -> msg.Data:
    return msg.Data("h", 100 + seq, seq, low, guarantee, epoch)


def cluster(size: int, seed: int, config: NodeConfig) -> SimNetwork:
    return sim_cluster(size, seed, config, jitter_s=0.0)


# ------------------------------------------------------------ the exactly-once window


def test_the_window_remembers_an_outcome_with_each_id() -> None:
    window = DedupWindow(capacity=2, expiry=10.0)
    assert window.recall("a", 0.0) is None  # new: remembered, its handler running
    running = window.recall("a", 1.0)
    assert running is not None and not running.finished
    window.settle("a", "handler raised ValueError: no")
    failed = window.recall("a", 2.0)
    assert failed is not None and (failed.finished, failed.error) == (
        True,
        "handler raised ValueError: no",
    )
    assert window.recall("b", 2.0) is None
    assert window.recall("a", 2.0) is failed  # a hit: "a" is now the most recently used
    assert window.recall("c", 2.0) is None  # so "b" goes
    assert window.seen("a", 2.0) and not window.seen("b", 2.0)
    window.settle("d", None)  # an outcome whose id went meanwhile is remembered again
    done = window.recall("d", 3.0)
    assert done is not None and done.finished and done.error is None
    assert len(window) == 2
    assert window.recall("d", 13.0) is None  # over 10 s after it was remembered again


def test_an_exactly_once_failure_is_answered_again_after_the_stream_was_forgotten() -> None:
    rx = receiver()
    assert len(rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 0.0)) == 1
    rx.finished("a", (7, 1, 1), "handler raised ValueError: no")
    rx.forget("a")  # evicted, say
    assert rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 1.0) == []
    stream = rx.stream("a")
    assert stream is not None
    ack = stream.ack(10)
    assert (ack.upto, ack.failures) == (1, ((1, "handler raised ValueError: no"),))


def test_a_copy_recognised_while_its_handler_runs_waits_for_the_real_outcome() -> None:
    rx = receiver()
    assert len(rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 0.0)) == 1
    rx.forget("a")
    assert rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 1.0) == []
    stream = rx.stream("a")
    assert stream is not None
    ack = stream.ack(10)
    # arrived and being handled: not finished, so not DELIVERED at the sender yet
    assert (ack.upto, ack.delivered_upto, ack.failures) == (0, 1, ())
    rx.finished("a", (7, 1, 1), "handler raised KeyError: 'x'")  # the first copy's receipt
    ack = stream.ack(10)
    assert (ack.upto, ack.failures) == (1, ((1, "handler raised KeyError: 'x'"),))
    rx.forget("a")  # and the outcome stays known beyond this stream too
    rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 2.0)
    stream = rx.stream("a")
    assert stream is not None and stream.ack(10).failures == ((1, "handler raised KeyError: 'x'"),)


def test_an_exactly_once_id_is_kept_twice_the_window_after_its_first_copy() -> None:
    config = NodeConfig(message_ttl_s=1.0, dedup_window_s=1.0)
    assert config.dedup_retention_s == 2.0
    rx = DirectReceiver(config, Counter(), first_stream_id=0)
    assert len(rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 10.0)) == 1
    rx.finished("a", (7, 1, 1), None)
    rx.forget("a")
    # the last copy leaves before 10 + ttl; one that spends just under the window in
    # transit is still recognised
    assert rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 11.99) == []
    rx.forget("a")
    assert len(rx.receive("a", 7, data(2, G.EXACTLY_ONCE), b"", 11.99)) == 1
    rx.finished("a", (7, 1, 2), None)
    rx.forget("a")
    # not refreshed by the copy at 11.99: 2 s after the first copy it is forgotten
    assert len(rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 12.0)) == 1


def test_exactly_once_holds_for_a_copy_sent_at_the_last_moment_with_a_long_transit() -> None:
    """The guarantee of docs/delivery.md at its edge: ttl = dedup_window_s = 1 s, the
    stream forgotten, the last copies spend 0.9 s in transit."""
    net, runs, number = exactly_once_copy_after_forgetting(201, transit_s=0.9)
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 1)
    net.run_for(1.5)
    assert net.nodes["n1"].stats().get("reliable_duplicates", 0) >= 1  # copies did arrive
    assert runs == [b"x"]


def test_no_copy_leaves_at_or_after_its_deadline() -> None:
    """Expiry runs before retries in a tick: the last copy leaves before the ttl."""
    config = NodeConfig(retry_initial_s=0.01, retry_max_s=0.01)
    net = cluster(2, 202, config)
    sender = net.nodes["n0"]
    copies: list[float] = []
    handle = sender.core.handle

    def watching(event: object, now: float) -> list[fx.Effect]:
        effects = handle(event, now)  # type: ignore[arg-type]
        copies.extend(
            now for e in effects if isinstance(e, fx.Send) and isinstance(e.message, msg.Data)
        )
        return effects

    sender.core.handle = watching  # type: ignore[method-assign]
    net.block("n0", "n1")  # nothing arrives: resent until it expires
    for ttl in (0.3, 0.33, 0.37, 0.41):
        copies.clear()
        deadline = net.now + ttl
        number = net.send("n0", "n1", "h", b"x", G.EXACTLY_ONCE, ttl_s=ttl)
        assert net.run_until(lambda n=number: n in sender.acks, 1)  # type: ignore[misc]
        assert sender.acks[number][0] is AckStatus.EXPIRED
        assert len(copies) > 3 and max(copies) < deadline, (ttl, deadline, copies[-3:])


# ------------------------------------------------------------ a sender that left


def test_a_stream_of_a_sender_that_left_is_retired_not_forgotten() -> None:
    rx = receiver()
    rx.receive("a", 7, data(1, G.ORDERED), b"", 0.0)
    rx.receive("a", 7, data(3, G.ORDERED), b"", 0.0)  # held back behind 2
    rx.receive("b", 1, data(1), b"", 0.0)
    stream = rx.stream("a")
    assert stream is not None
    before = stream.stream_id
    rx.retire("a")
    assert "a" not in rx.ack_due
    assert len(stream.held) == 0 and stream.stream_id != before  # the sender resends them
    # its numbers stay: should the same incarnation come back, 1 is a duplicate
    assert rx.receive("a", 7, data(1, G.ORDERED), b"", 1.0) == []
    rx.retire("a")
    rx.receive("c", 1, data(1), b"", 1.0)
    assert rx.stream("a") is not None
    tight = receiver(inbound_streams_max_count=2)
    tight.receive("a", 7, data(1), b"", 0.0)
    tight.receive("b", 1, data(1), b"", 0.0)
    tight.retire("b")
    tight.receive("c", 1, data(1), b"", 0.0)  # a retired stream is the first to go
    assert tight.stream("b") is None and tight.stream("a") is not None


def test_a_copy_from_an_incarnation_that_left_is_not_taken_nor_acknowledged() -> None:
    config = NodeConfig(retry_initial_s=0.02, retry_max_s=0.05, drain_timeout_s=0.05)
    net = cluster(2, 203, config)
    runs: list[bytes] = []
    net.nodes["n1"].handlers["h"] = lambda sender, payload: runs.append(payload)
    net.block("n1", "n0")
    net.send("n0", "n1", "h", b"m1", G.AT_LEAST_ONCE, ttl_s=30)
    net.run_for(0.3)
    assert runs == [b"m1"]
    rx = net.nodes["n1"]
    acks_after_left: list[fx.Effect] = []
    handle = rx.core.handle

    def watching(event: object, now: float) -> list[fx.Effect]:
        effects = handle(event, now)  # type: ignore[arg-type]
        if rx.view()["n0"] is MemberStatus.LEFT:
            acks_after_left.extend(
                e for e in effects if isinstance(e, fx.Send) and isinstance(e.message, msg.DataAck)
            )
        return effects

    rx.core.handle = watching  # type: ignore[method-assign]
    net.stop("n0")  # LEFT, and a retransmission in the same tick
    net.run_for(0.1)
    assert rx.view()["n0"] is MemberStatus.LEFT
    assert rx.stats().get("reliable_sender_gone", 0) >= 1
    assert runs == [b"m1"] and acks_after_left == []


def test_a_removed_sender_that_comes_back_goes_on_with_its_stream() -> None:
    """n1 removes n0 while n0, which still hears n1, keeps resending an ORDERED message
    n1 already ran; n0 refutes the removal after the heal, and its copies are known."""
    config = NodeConfig(retry_initial_s=0.05, retry_max_s=0.1, down_member_expiry_s=1.0)
    net = cluster(2, 7, config)
    runs: list[bytes] = []
    net.nodes["n1"].handlers["h"] = lambda sender, payload: runs.append(payload)
    net.block("n1", "n0")  # the acknowledgement is lost
    number = net.send("n0", "n1", "h", b"m1", G.ORDERED, ttl_s=30)
    net.run_for(0.05)
    assert runs == [b"m1"]
    net.heal()
    net.block("n0", "n1")  # n1 no longer hears n0; n0 still hears n1
    assert net.run_until(lambda: net.nodes["n1"].view().get("n0") is MemberStatus.REMOVED, 10)
    assert net.nodes["n0"].view()["n1"] is MemberStatus.UP
    net.heal()
    assert net.run_until(lambda: net.nodes["n1"].view().get("n0") is MemberStatus.UP, 10)
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 10)
    assert net.nodes["n0"].acks[number] == (AckStatus.DELIVERED, "")
    assert runs == [b"m1"]
