"""Throughput and latency of zcluster next to raw pyzmq, measured in the same run.

    python benchmarks/bench_messaging.py [--messages 100000] [--round-trips 5000]

Every scenario runs the receiver in a separate process. Results are printed
as absolute rates and as ratios to the raw pyzmq baseline of the same run
(the machines are shared and noisy: compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from zcluster import AsyncNode, Node

HWM = 100_000
PAYLOAD = {"sensor": "t-17", "celsius": 21.5, "seq": 0}
READY_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 300.0


# ------------------------------------------------------------------ receivers (child processes)


def raw_subscriber(endpoint: str, count: int, decode: bool) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, HWM)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    got = 0
    ready_sent = False
    while got < count:
        if not sub.poll(int(RUN_TIMEOUT_S * 1000)):
            break
        topic, body = sub.recv_multipart()
        if topic == b"w":
            if not ready_sent:
                print("ready", flush=True)
                ready_sent = True
            continue
        if decode:
            msgpack.unpackb(body)
        got += 1
    print(json.dumps({"received": got}), flush=True)
    sub.close(0)
    ctx.term()


def zc_subscriber(seed: str, count: int) -> None:
    done = threading.Event()
    got = 0

    def on_message(topic: str, message: Any, sender: str) -> None:
        nonlocal got
        got += 1
        if got >= count:
            done.set()

    node = Node("bench-sub", seeds=[seed])
    node.subscribe("bench", on_message)
    with node:
        print("ready", flush=True)
        done.wait(RUN_TIMEOUT_S)
        print(json.dumps({"received": got}), flush=True)


def raw_echo(endpoint: str) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    print("ready", flush=True)
    while True:
        frames = router.recv_multipart()
        if frames[-1] == b"stop":
            break
        router.send_multipart(frames)
    router.close(0)
    ctx.term()


def zc_echo(seed: str) -> None:
    stop = threading.Event()
    node = Node("bench-echo", seeds=[seed])
    node.register("echo", lambda message, sender: message)
    node.register("stop", lambda message, sender: stop.set())
    with node:
        print("ready", flush=True)
        stop.wait(RUN_TIMEOUT_S)


# ------------------------------------------------------------------ drivers (this process)


def child(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True
    )
    return proc


def expect_ready(proc: subprocess.Popen[str], poke: Callable[[], None] | None = None) -> None:
    assert proc.stdout is not None
    ready = threading.Event()
    threading.Thread(target=lambda: (proc.stdout.readline(), ready.set()), daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.01):
        if time.monotonic() > deadline:
            raise RuntimeError("receiver did not get ready")
        if poke is not None:
            poke()


def finish(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    return int(json.loads(out.strip().splitlines()[-1])["received"])


def bench_raw_pubsub(count: int, encode: bool) -> dict[str, float]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, HWM)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    proc = child("raw-sub", f"tcp://127.0.0.1:{port}", str(count), "1" if encode else "0")
    expect_ready(proc, lambda: pub.send_multipart([b"w", b""]))
    body = msgpack.packb(PAYLOAD)
    start = time.perf_counter()
    for _ in range(count):
        if encode:
            body = msgpack.packb(PAYLOAD)
        pub.send_multipart([b"d", body])
    sent = time.perf_counter() - start
    received = finish(proc)
    elapsed = time.perf_counter() - start
    pub.close(0)
    ctx.term()
    return {"rate": received / elapsed, "received": received, "send_us": sent / count * 1e6}


def bench_zc_pubsub(count: int) -> dict[str, float]:
    with Node("bench-pub") as node:
        proc = child("zc-sub", node.address, str(count))
        expect_ready(proc)
        if not node.wait_for(lambda: "bench-sub" in node.subscribers("bench"), READY_TIMEOUT_S):
            raise RuntimeError("subscriber did not confirm")
        before = node.stats()
        start = time.perf_counter()
        for _ in range(count):
            node.publish("bench", PAYLOAD)
        sent = time.perf_counter() - start
        received = finish(proc)
        elapsed = time.perf_counter() - start
        stats = node.stats()
    batches = stats.get("submit_batches", 0) - before.get("submit_batches", 0)
    return {
        "rate": received / elapsed,
        "received": received,
        "send_us": sent / count * 1e6,
        "calls_per_wakeup": count / max(1, batches),
    }


def bench_zc_async_pubsub(count: int) -> dict[str, float]:
    import asyncio

    async def run() -> dict[str, float]:
        async with AsyncNode("bench-pub") as node:
            proc = child("zc-sub", node.address, str(count))
            await asyncio.get_running_loop().run_in_executor(None, expect_ready, proc)
            ok = await node.wait_for(
                lambda: "bench-sub" in node.subscribers("bench"), READY_TIMEOUT_S
            )
            if not ok:
                raise RuntimeError("subscriber did not confirm")
            start = time.perf_counter()
            for i in range(count):
                await node.publish("bench", PAYLOAD)
                if i % 1000 == 999:
                    await asyncio.sleep(0)
            received = await asyncio.get_running_loop().run_in_executor(None, finish, proc)
            elapsed = time.perf_counter() - start
            return {"rate": received / elapsed, "received": received}

    return asyncio.run(run())


def bench_raw_round_trip(count: int) -> dict[str, float]:
    ctx = zmq.Context()
    probe = ctx.socket(zmq.ROUTER)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = child("raw-echo", endpoint)
    expect_ready(proc)
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    body = msgpack.packb(PAYLOAD)
    start = time.perf_counter()
    for _ in range(count):
        dealer.send(msgpack.packb(PAYLOAD))
        msgpack.unpackb(dealer.recv())
    elapsed = time.perf_counter() - start
    dealer.send(b"stop")
    proc.wait(RUN_TIMEOUT_S)
    dealer.close(0)
    ctx.term()
    del body
    return {"rate": count / elapsed, "latency_us": elapsed / count * 1e6}


def bench_zc_round_trip(count: int) -> dict[str, float]:
    with Node("bench-client") as node:
        proc = child("zc-echo", node.address)
        expect_ready(proc)
        node.wait_for(lambda: node.member("bench-echo") is not None, READY_TIMEOUT_S)
        start = time.perf_counter()
        for _ in range(count):
            node.request("bench-echo", "echo", PAYLOAD)
        elapsed = time.perf_counter() - start
        node.send("bench-echo", "stop", None)
        proc.wait(RUN_TIMEOUT_S)
    return {"rate": count / elapsed, "latency_us": elapsed / count * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description="zcluster vs raw pyzmq, same run")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--round-trips", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario; the best counts")
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        role, *rest = args.child
        if role == "raw-sub":
            raw_subscriber(rest[0], int(rest[1]), rest[2] == "1")
        elif role == "zc-sub":
            zc_subscriber(rest[0], int(rest[1]))
        elif role == "raw-echo":
            raw_echo(rest[0])
        elif role == "zc-echo":
            zc_echo(rest[0])
        return

    n, rt, repeat = args.messages, args.round_trips, args.repeat

    def best(run: Callable[[], dict[str, float]], key: str = "rate") -> dict[str, float]:
        # Scenarios interleave within each round so that machine noise hits all of them alike.
        return max((run() for _ in range(repeat)), key=lambda r: r[key])

    print(
        f"pub/sub fan-out to one subscriber process, {n} messages of a small dict, best of {repeat}"
    )
    raw = best(lambda: bench_raw_pubsub(n, encode=False))
    raw_mp = best(lambda: bench_raw_pubsub(n, encode=True))
    zc = best(lambda: bench_zc_pubsub(n))
    zc_async = best(lambda: bench_zc_async_pubsub(n))
    rows = [
        ("raw pyzmq PUB/SUB, pre-encoded bytes", raw),
        ("raw pyzmq PUB/SUB + msgpack per message", raw_mp),
        ("zcluster Node.publish -> Node callback", zc),
        ("zcluster AsyncNode.publish -> Node callback", zc_async),
    ]
    for name, result in rows:
        ratio = result["rate"] / raw_mp["rate"]  # the fair baseline: both encode each message
        lost = n - int(result["received"])
        print(
            f"  {name:45s} {result['rate']:>10,.0f} msg/s  {ratio:5.2f}x raw+msgpack  lost {lost}"
        )
    print(
        f"  caller cost per publish: zcluster {zc['send_us']:.2f} us, "
        f"raw send+msgpack {raw_mp['send_us']:.2f} us; "
        f"{zc['calls_per_wakeup']:.0f} publishes per loop wake-up"
    )
    print(f"request/reply round trips to another process, {rt} calls")
    raw_rt = best(lambda: bench_raw_round_trip(rt))
    zc_rt = best(lambda: bench_zc_round_trip(rt))
    for name, result in (
        ("raw pyzmq DEALER/ROUTER + msgpack", raw_rt),
        ("zcluster Node.request", zc_rt),
    ):
        ratio = result["latency_us"] / raw_rt["latency_us"]
        print(f"  {name:45s} {result['latency_us']:>8.1f} us/call  {ratio:5.2f}x raw latency")


if __name__ == "__main__":
    main()
