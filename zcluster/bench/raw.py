"""The raw pyzmq limit: the same traffic over plain sockets, one frame per message.

Each message is packed with ``msgpack.packb`` when sent and unpacked with
``msgpack.unpackb`` when received, as zcluster does, so the baseline is the
fastest a Python program can move these messages with ZeroMQ. As in the
cross-system comparison (docs/performance.md), each side runs in its own
process and throughput is the messages received divided by the time from
the first send to the last receive. High-water marks are set above the
message count, so the raw side drops nothing by design; what it does lose
is still counted.

With ``curve`` the throughput sessions' sockets speak CURVE (the server's key set,
no ZAP handler: libzmq lets every client in), the baseline of the ``security``
group; the synchronization sockets stay plain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from zcluster.bench import workload
from zcluster.bench.modes import CurveKeys, connect_curve, serve_curve
from zcluster.bench.processes import READY_TIMEOUT_S, RUN_TIMEOUT_S, Link, Workers, cpu_s
from zcluster.bench.samples import (
    BenchError,
    Sample,
    best_burst,
    delivery_sample,
    latency_samples,
)
from zcluster.bench.tally import IDLE_TIMEOUT_S

LOOPBACK = "tcp://127.0.0.1"
#: a round trip that takes longer than this fails the run
ROUND_TRIP_TIMEOUT_S = 5.0
#: queue room beyond the message count, so that nothing is dropped by design
_HWM_MARGIN_COUNT = 10_000

_PROBE, _START, _READY, _DONE, _GO = b"P", b"S", b"R", b"D", b"G"
_SYNC_POLL_MS = 5
#: a subscriber's last word to the publisher gets this long to go out
_SYNC_LINGER_MS = 1000


def _endpoint(port: int) -> str:
    return f"{LOOPBACK}:{port}"


def _socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, hwm: int = 1000) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.sndhwm = sock.rcvhwm = hwm
    return sock


def _receive(sock: zmq.Socket[bytes], count: int, *, routed: bool) -> tuple[int, float]:
    """Read and unpack ``count`` messages: (how many arrived, when the last one did)."""
    received, unpackb = 0, msgpack.unpackb
    try:
        if routed:  # each message comes with the sender's identity frame first
            recv_multipart = sock.recv_multipart
            for received in range(count):  # noqa: B007 - the count reached is the result
                unpackb(recv_multipart()[1])
        else:
            recv = sock.recv
            for received in range(count):  # noqa: B007 - the count reached is the result
                unpackb(recv())
    except zmq.Again:
        return received, time.perf_counter() - IDLE_TIMEOUT_S
    return count, time.perf_counter()


def _send(send: Callable[[bytes], Any], count: int, body_bytes: int) -> float:
    """Pack and send ``count`` messages; returns when the first went out."""
    packb, make, payload = msgpack.packb, workload.make_message, workload.body(body_bytes)
    start_s = time.perf_counter()
    for seq in range(count):
        send(packb(make(seq, payload)))
    return start_s


# ---------------------------------------------------------------- PUB -> SUB


def _publisher(
    link: Link,
    subscribers_count: int,
    count: int,
    body_bytes: int,
    bursts: int,
    keys: CurveKeys | None,
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = _socket(ctx, zmq.PUB, count + _HWM_MARGIN_COUNT)
    sync = _socket(ctx, zmq.PULL)
    try:
        serve_curve(pub, keys)
        port = pub.bind_to_random_port(LOOPBACK)
        sync_port = sync.bind_to_random_port(LOOPBACK)
        link.report("ready", port=port, sync_port=sync_port)
        ready, deadline = 0, time.monotonic() + READY_TIMEOUT_S
        while ready < subscribers_count:  # probe until every subscriber hears us
            if time.monotonic() > deadline:
                raise BenchError(f"{ready} of {subscribers_count} subscribers connected")
            pub.send(_PROBE)
            if sync.poll(_SYNC_POLL_MS):
                while sync.poll(0):
                    ready += sync.recv() == _READY
        for _ in range(bursts):
            cpu_before_s = cpu_s()
            pub.send(_START)
            start_s = _send(pub.send, count, body_bytes)
            done, deadline = 0, time.monotonic() + RUN_TIMEOUT_S
            while done < subscribers_count and time.monotonic() < deadline:  # keep the tail
                if sync.poll(_SYNC_POLL_MS):
                    done += sync.recv() == _DONE
            link.report("published", start_s=start_s, cpu_s=cpu_s() - cpu_before_s)
    finally:
        pub.close()
        sync.close()
        ctx.term()


def _subscriber(
    link: Link, port: int, sync_port: int, count: int, bursts: int, keys: CurveKeys | None
) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = _socket(ctx, zmq.SUB, count + _HWM_MARGIN_COUNT)
    sync = _socket(ctx, zmq.PUSH)
    sync.linger = _SYNC_LINGER_MS
    try:
        connect_curve(sub, keys)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(_endpoint(port))
        sync.connect(_endpoint(sync_port))
        sub.rcvtimeo = int(READY_TIMEOUT_S * 1000)
        sub.recv()
        sync.send(_READY)
        for _ in range(bursts):
            cpu_before_s = cpu_s()
            sub.rcvtimeo = int(READY_TIMEOUT_S * 1000)
            while sub.recv() != _START:
                pass
            sub.rcvtimeo = int(IDLE_TIMEOUT_S * 1000)
            received, last_s = _receive(sub, count, routed=False)
            spent_s = cpu_s() - cpu_before_s
            sync.send(_DONE)
            link.report("received", received=received, last_arrival_s=last_s, cpu_s=spent_s)
    finally:
        sub.close()
        sync.close()
        ctx.term()


def pubsub(
    subscribers_count: int, count: int, body_bytes: int, *, curve: bool = False
) -> dict[str, Sample]:
    """PUB -> ``subscribers_count`` SUB processes: deliveries per second, all subscribers."""
    bursts = []
    keys = CurveKeys.generate() if curve else None
    label = f"raw PUB->SUB 1->{subscribers_count}{' (CURVE)' if curve else ''}"
    with Workers(label) as workers:
        bursts_count = workload.RAW_BURSTS_COUNT
        workers.start(_publisher, "pub", subscribers_count, count, body_bytes, bursts_count, keys)
        ports = workers.expect("ready", READY_TIMEOUT_S, "pub")
        for index in range(subscribers_count):
            args = (ports["port"], ports["sync_port"], count, bursts_count, keys)
            workers.start(_subscriber, f"sub{index}", *args)
        for _ in range(workload.RAW_BURSTS_COUNT):
            sent = workers.expect("published", READY_TIMEOUT_S + RUN_TIMEOUT_S, "pub")
            results = [workers.expect("received", RUN_TIMEOUT_S) for _ in range(subscribers_count)]
            bursts.append(delivery_sample(sent["start_s"], results, count, sent["cpu_s"]))
    return {"delivered": best_burst(bursts)}


# ---------------------------------------------------------------- DEALER -> ROUTER


def _sink(link: Link, count: int, bursts: int, keys: CurveKeys | None) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = _socket(ctx, zmq.ROUTER, count + _HWM_MARGIN_COUNT)
    try:
        serve_curve(router, keys)
        link.report("ready", port=router.bind_to_random_port(LOOPBACK))
        router.rcvtimeo = int(READY_TIMEOUT_S * 1000)
        identity, _ = router.recv_multipart()
        router.rcvtimeo = int(IDLE_TIMEOUT_S * 1000)
        for _ in range(bursts):
            cpu_before_s = cpu_s()
            router.send_multipart([identity, _GO])
            received, last_s = _receive(router, count, routed=True)
            spent_s = cpu_s() - cpu_before_s
            link.report("received", received=received, last_arrival_s=last_s, cpu_s=spent_s)
        router.send_multipart([identity, _GO])  # the source's last burst is over
        link.wait_over(RUN_TIMEOUT_S)
    finally:
        router.close()
        ctx.term()


def _source(link: Link, port: int, count: int, bursts: int, keys: CurveKeys | None) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _socket(ctx, zmq.DEALER, count + _HWM_MARGIN_COUNT)
    dealer.linger = int(RUN_TIMEOUT_S * 1000)  # what is queued at the end is still sent
    dealer.sndtimeo = dealer.rcvtimeo = int(RUN_TIMEOUT_S * 1000)
    try:
        connect_curve(dealer, keys)
        dealer.connect(_endpoint(port))
        dealer.send(_GO)
        dealer.recv()  # the sink is ready
        for _ in range(bursts):
            cpu_before_s = cpu_s()
            start_s = _send(dealer.send, count, workload.BODY_BYTES)
            dealer.recv()  # the sink is done with the burst (and ready for the next)
            link.report("sent", start_s=start_s, cpu_s=cpu_s() - cpu_before_s)
        link.wait_over(RUN_TIMEOUT_S)
    finally:
        dealer.close()
        ctx.term()


def push(count: int, *, curve: bool = False) -> dict[str, Sample]:
    """DEALER -> ROUTER in another process: messages received per second."""
    bursts = []
    keys = CurveKeys.generate() if curve else None
    with Workers(f"raw DEALER->ROUTER{' (CURVE)' if curve else ''}") as workers:
        workers.start(_sink, "sink", count, workload.RAW_BURSTS_COUNT, keys)
        port = workers.expect("ready", READY_TIMEOUT_S, "sink")["port"]
        workers.start(_source, "source", port, count, workload.RAW_BURSTS_COUNT, keys)
        for _ in range(workload.RAW_BURSTS_COUNT):
            sent = workers.expect("sent", READY_TIMEOUT_S + RUN_TIMEOUT_S, "source")
            result = workers.expect("received", RUN_TIMEOUT_S, "sink")
            bursts.append(delivery_sample(sent["start_s"], [result], count, sent["cpu_s"]))
    return {"delivered": best_burst(bursts)}


# ---------------------------------------------------------------- DEALER <-> ROUTER echo


def _echo(link: Link, total: int) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = _socket(ctx, zmq.ROUTER)
    router.rcvtimeo = int(READY_TIMEOUT_S * 1000)
    try:
        link.report("ready", port=router.bind_to_random_port(LOOPBACK))
        recv_multipart, send_multipart = router.recv_multipart, router.send_multipart
        packb, unpackb = msgpack.packb, msgpack.unpackb
        for _ in range(total):
            identity, frame = recv_multipart()
            send_multipart([identity, packb(unpackb(frame))])
    finally:
        router.close()
        ctx.term()


def _echo_client(link: Link, port: int, count: int, warmup: int) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = _socket(ctx, zmq.DEALER)
    dealer.rcvtimeo = int(ROUND_TRIP_TIMEOUT_S * 1000)
    try:
        dealer.connect(_endpoint(port))
        send, recv, packb, unpackb = dealer.send, dealer.recv, msgpack.packb, msgpack.unpackb
        make, pc, payload = workload.make_message, time.perf_counter_ns, workload.body()
        samples_ns = [0] * count
        for seq in range(-warmup, count):
            started_ns = pc()
            send(packb(make(seq, payload)))
            unpackb(recv())
            if seq >= 0:
                samples_ns[seq] = pc() - started_ns
        link.report("round_trips", samples_ns=samples_ns)
    finally:
        dealer.close()
        ctx.term()


async def _echo_async(link: Link, total: int) -> None:
    ctx = zmq.asyncio.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    try:
        link.report("ready", port=router.bind_to_random_port(LOOPBACK))
        packb, unpackb = msgpack.packb, msgpack.unpackb
        for _ in range(total):
            identity, frame = await router.recv_multipart()
            await router.send_multipart([identity, packb(unpackb(frame))])
    finally:
        router.close()
        ctx.term()


async def _echo_client_async(link: Link, port: int, count: int, warmup: int) -> None:
    ctx = zmq.asyncio.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    try:
        dealer.connect(_endpoint(port))
        packb, unpackb = msgpack.packb, msgpack.unpackb
        make, pc, payload = workload.make_message, time.perf_counter_ns, workload.body()
        samples_ns = [0] * count
        for seq in range(-warmup, count):
            started_ns = pc()
            await dealer.send(packb(make(seq, payload)))
            unpackb(await dealer.recv())
            if seq >= 0:
                samples_ns[seq] = pc() - started_ns
        link.report("round_trips", samples_ns=samples_ns)
    finally:
        dealer.close()
        ctx.term()


def _echo_in_asyncio(link: Link, total: int) -> None:
    asyncio.run(_bounded(_echo_async(link, total)))


def _echo_client_in_asyncio(link: Link, port: int, count: int, warmup: int) -> None:
    asyncio.run(_bounded(_echo_client_async(link, port, count, warmup)))


async def _bounded(work: Coroutine[Any, Any, None]) -> None:
    """One time limit around a whole run: a limit per await would cost a task per message."""
    await asyncio.wait_for(work, READY_TIMEOUT_S + RUN_TIMEOUT_S)


def round_trips(count: int, warmup: int, *, use_asyncio: bool) -> dict[str, Sample]:
    """Sequential DEALER -> ROUTER -> DEALER round trips to another process: p50, p99."""
    server, client = (
        (_echo_in_asyncio, _echo_client_in_asyncio) if use_asyncio else (_echo, _echo_client)
    )
    with Workers(f"raw echo{' (asyncio)' if use_asyncio else ''}") as workers:
        workers.start(server, "echo", count + warmup)
        port = workers.expect("ready", READY_TIMEOUT_S, "echo")["port"]
        workers.start(client, "client", port, count, warmup)
        samples_ns = workers.expect("round_trips", RUN_TIMEOUT_S, "client")["samples_ns"]
    return latency_samples(samples_ns)
