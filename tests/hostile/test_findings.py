"""The hostile-input findings, each re-run as an attacker on the network would: a plain
DEALER that speaks the protocol without any key, against ``zcluster node`` processes.

1. One SYNC carrying a live member's record at version 2^64-1 made the member a zombie
   (told to itself) or DOWN everywhere for good (told to another member).
4. Payloads of valid msgpack that decode to millions of objects, sent to the built-in
   ``zcluster.view`` handler, were decoded on the loop and got the node declared DOWN.
5. Answers went to whatever reply address a message named: one FETCH made a publisher
   send up to 1,024 REPUBLISH messages to a third party.

And one found since: messages of 1 MiB sent at a node's PUB piled up in its queues
(2.5 GB from four connections in 10 s), because a PUB takes its input only when used.

(Findings 2 and 3, the mixed flood and the memory it took, are tests/hostile/test_flood.py.)
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import zmq

from tests.helpers import wait_until
from tests.hostile.cluster import rss_mb, up_in, victim_cluster
from zcluster import DeliveryGuarantee, Member, MemberStatus, Node
from zcluster.protocol import messages as msg
from zcluster.protocol.members import MAX_VERSION
from zcluster.testing.flood import oversized, view_bomb
from zcluster.wire import Encoder, decode_header

Context = zmq.Context[zmq.Socket[bytes]]
ALL = {"healthy", "victim", "third"}


@contextmanager
def attacker(*addresses: str) -> Iterator[list[zmq.Socket[bytes]]]:
    """Plain DEALERs connected to ``addresses`` (one each), closed afterwards."""
    context: Context = zmq.Context()
    sockets = []
    try:
        for address in addresses:
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"tcp://{address}")
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close(linger=0)
        context.term()


def _record(node: Node, node_id: str) -> Member:
    record = next((m for m in node.members() if m.node_id == node_id), None)
    assert record is not None, node.members()
    return record


@pytest.mark.timeout(60)
def test_a_record_at_the_largest_version_neither_silences_nor_downs_a_member(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with victim_cluster(monkeypatch) as (healthy, victim, third):
        record = _record(healthy, "victim")
        down = dataclasses.replace(record, version=MAX_VERSION, status=MemberStatus.DOWN)
        suspect = dataclasses.replace(record, version=MAX_VERSION, status=MemberStatus.SUSPECT)
        encoder = Encoder("mallory", 1)
        with attacker(third.address, healthy.address, victim.address) as (to_third, to_h, to_v):
            for sock, forged in ((to_third, down), (to_h, down), (to_v, suspect)):
                sock.send_multipart(encoder.direct(msg.Sync((forged,), False, "127.0.0.1:9"), b""))
            assert wait_until(
                lambda: healthy.stats().get("records_refused_reserved_version", 0) >= 1, 5
            ), healthy.stats()
            # Longer than a heartbeat timeout and a suspicion together: a silenced victim
            # would be suspected and declared down by now, a downed one seen down at once.
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                for view in (healthy.members(), victim.members(), third.members()):
                    assert up_in(view) == ALL, view
                time.sleep(0.1)
        # The victim still speaks for itself: a newcomer joins through it alone.
        with Node("late", bind="127.0.0.1:0", seeds=[victim.address]) as late:
            everyone = {*ALL, "late"}
            assert wait_until(lambda: up_in(late.members()) == everyone, 10), late.members()
            assert wait_until(lambda: up_in(victim.members()) == everyone, 10)
        assert _record(healthy, "victim").version < MAX_VERSION
        assert "Traceback" not in victim.log() + third.log()


@pytest.mark.timeout(90)
def test_payload_bombs_for_the_built_in_handler_are_never_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight SENDs of 8 MiB (past the largest frame a node takes) and 64 of 1 MiB of
    valid msgpack that decodes to a million empty lists each, to ``zcluster.view``, while
    a healthy member asks the victim for its view 128 times."""
    with victim_cluster(monkeypatch) as (healthy, victim, third):
        start_mb = rss_mb(victim.pid)
        rng = random.Random(4)
        bombs = [oversized(rng, "mallory")] * 8 + [view_bomb(rng, "mallory")] * 64
        sent = threading.Event()

        def bomb() -> None:
            with attacker(*[victim.address] * 4) as sockets:
                for turn, frames in enumerate(bombs):
                    sockets[turn % len(sockets)].send_multipart(frames, copy=False)
                sent.set()
                time.sleep(2.0)  # the connections stay while the victim reads them

        bomber = threading.Thread(target=bomb, daemon=True)
        bomber.start()
        failed, not_up, peak_mb = [], set(), start_mb
        for _ in range(128):
            try:
                view = healthy.request("victim", "zcluster.view", None, timeout=2.0)
                not_up |= {m["node_id"] for m in view["members"] if m["status"] != "up"}
            except Exception as exc:  # every failure is reported with its cause
                failed.append(f"{type(exc).__name__}: {exc}")
            not_up |= ALL - up_in(healthy.members())
            peak_mb = max(peak_mb, rss_mb(victim.pid))
        bomber.join(30)
        assert sent.is_set()
        assert failed == [], failed
        assert not_up == set(), not_up
        assert up_in(third.members()) == ALL
        # 64 MiB of bombs queued at most (docs/architecture.md, "Memory"), none decoded:
        # decoding one costs ~64 MiB of objects, all of them over 4 GiB.
        assert peak_mb < start_mb + 200, f"peak {peak_mb:.0f} MB from {start_mb:.0f} MB"


@pytest.mark.timeout(60)
def test_answers_cannot_be_aimed_at_a_third_party() -> None:
    """A FETCH naming a third party's address gets it nothing, from a stranger or in a
    member's name; PINGs naming it get it at most the strangers' answer rate."""
    context: Context = zmq.Context()
    sink = context.socket(zmq.ROUTER)
    sink.setsockopt(zmq.LINGER, 0)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    named = f"127.0.0.1:{port}"
    try:
        with (
            Node("pub", bind="127.0.0.1:0") as publisher,
            Node("member", bind="127.0.0.1:0", seeds=[publisher.address]),
        ):
            assert wait_until(lambda: up_in(publisher.members()) == {"pub", "member"}, 10)
            for number in range(1000):
                publisher.publish("prices", number, guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
            member_record = _record(publisher, "member")
            with attacker(publisher.address) as (sock,):
                fetch = msg.Fetch("prices", ((1, 1000),), named)
                sock.send_multipart(Encoder("mallory", 1).direct(fetch, b""))
                in_member_name = Encoder("member", member_record.incarnation)
                sock.send_multipart(in_member_name.direct(fetch, b""))
                assert wait_until(
                    lambda: publisher.stats().get("fetches_refused_not_a_member", 0) >= 1, 5
                ), publisher.stats()
                asked = time.monotonic()
                for probe_id in range(2000):
                    ping = msg.Ping(probe_id + 1, named)
                    sock.send_multipart(Encoder(f"mallory{probe_id}", 1).direct(ping, b""))
                assert wait_until(
                    lambda: publisher.stats().get("answers_refused_stranger_rate", 0) > 0, 5
                ), publisher.stats()
                elapsed = time.monotonic() - asked
            got: list[list[bytes]] = []
            while sink.poll(1000):
                got.append(sink.recv_multipart())
            kinds = {type(decode_header(frames[1], 1 << 20).message) for frames in got}
            assert kinds <= {msg.Ack}, kinds
            rate = publisher.config.stranger_answers_per_s
            assert len(got) <= rate * (elapsed + 1.0) + rate, (len(got), elapsed)
    finally:
        sink.close(linger=0)
        context.term()


@pytest.mark.timeout(60)
def test_a_flood_into_the_pub_holds_no_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    with victim_cluster(monkeypatch) as (healthy, victim, third):
        start_mb = rss_mb(victim.pid)
        pub_address = _record(healthy, "victim").pub_address
        garbage = b"\x05" + b"x" * (1024 * 1024 - 16)  # neither a subscription nor its end
        context: Context = zmq.Context()
        senders = []
        try:
            for _ in range(4):
                sock = context.socket(zmq.XSUB)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(f"tcp://{pub_address}")
                senders.append(sock)
            sent, peak_mb, deadline = 0, start_mb, time.monotonic() + 5.0
            while time.monotonic() < deadline:
                for sock in senders:
                    if sock.poll(10, zmq.POLLOUT):
                        sock.send(garbage, zmq.NOBLOCK)
                        sent += 1
                if sent % 64 == 0:
                    peak_mb = max(peak_mb, rss_mb(victim.pid))
                    assert healthy.request("victim", "zcluster.view", None, timeout=2.0)
        finally:
            for sock in senders:
                sock.close(linger=0)
            context.term()
        assert sent > 1000, sent  # more than the victim's queues hold
        # Four connections' queues at most (64 MiB each), taken as they come: far less.
        assert peak_mb < start_mb + 4 * 64, f"peak {peak_mb:.0f} MB from {start_mb:.0f} MB"
        for node in (healthy, victim, third):
            assert up_in(node.members()) == ALL
