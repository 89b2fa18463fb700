"""CPU time per message of a publisher and a subscriber process, zcluster next to raw pyzmq.

    python benchmarks/bench_cpu_per_message.py [--messages 200000] [--guarantee AT_MOST_ONCE]
    python benchmarks/bench_cpu_per_message.py --direct [--guarantee AT_LEAST_ONCE]

Throughput on a shared machine depends on what else runs; CPU time per
message does much less: it is what one message costs each process, all its
threads together (Python, libzmq's I/O thread), read with getrusage. Raw
pyzmq sends one frame per message, packed with msgpack on send and unpacked
on receive; zcluster runs `Node.publish` to a `Node` subscriber callback. The
wall time per message is printed too: under load it is larger than the CPU
time by however long the process waited for a core.

``--direct``: `Node.send` to a handler instead (a guaranteed sender's time runs
until every acknowledgement is final), next to raw DEALER -> ROUTER.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BODY = b"x" * 64
TOPIC = "t"
WARMUP_COUNT = 2000
READY_TIMEOUT_S = 30.0
RUN_TIMEOUT_S = 180.0
POLL_S = 0.05


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(POLL_S)


def report(role: str, count: int, cpu: float, wall: float, **extra: int) -> None:
    print(
        json.dumps(
            {f"{role}_cpu_us": cpu / count * 1e6, f"{role}_wall_us": wall / count * 1e6} | extra
        )
    )


class Marks:
    """Counts the measured messages a callback sees (id -1: warm-up), with CPU and wall
    time at the first and at the last."""

    def __init__(self, count: int) -> None:
        self.count, self.got = count, 0
        self.start = self.end = (0.0, 0.0)
        self.done = threading.Event()

    def saw(self, message: dict[str, object]) -> None:
        if message["id"] == -1:
            return
        if self.got == 0:
            self.start = (cpu_s(), time.perf_counter())
        self.got += 1
        if self.got == self.count:
            self.end = (cpu_s(), time.perf_counter())
            self.done.set()

    def wait_and_report(self, folder: Path) -> None:
        finished = self.done.wait(RUN_TIMEOUT_S)
        (folder / "done").write_text("")
        if not finished:
            raise SystemExit(f"got {self.got} of {self.count}")
        report("subscriber", self.count, self.end[0] - self.start[0], self.end[1] - self.start[1])


def send_counted(send: Callable[[bytes], object], prefix: bytes, count: int, folder: Path) -> None:
    """Pack and send ``count`` measured messages, each after ``prefix``; report their
    cost once the receiver is done."""
    import msgpack

    pack, clock = msgpack.packb, time.perf_counter
    cpu, wall = cpu_s(), clock()
    for i in range(count):
        send(prefix + pack({"id": i, "ts": clock(), "body": BODY}))
    cpu, wall = cpu_s() - cpu, clock() - wall
    wait_for_file(folder / "done")
    report("publisher", count, cpu, wall)


def receive_counted(recv_body: Callable[[], bytes], count: int, folder: Path) -> None:
    """Receive and unpack until ``count`` measured messages came; report their cost."""
    import msgpack

    unpack = msgpack.unpackb
    while unpack(recv_body())["id"] == -1:
        pass
    cpu, wall = cpu_s(), time.perf_counter()  # the first measured message is in
    for _ in range(count - 1):
        unpack(recv_body())
    cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
    (folder / "done").write_text("")
    report("subscriber", count, cpu, wall)


def zc_publisher(folder: Path, count: int, guarantee_name: str) -> None:
    import zcluster

    guarantee = zcluster.DeliveryGuarantee[guarantee_name]
    with zcluster.Node("publisher", bind="127.0.0.1:0") as node:
        (folder / "address").write_text(node.address)
        if not node.wait_for(lambda: len(node.subscribers(TOPIC)) >= 1, READY_TIMEOUT_S):
            raise SystemExit("no subscriber confirmed")
        for _ in range(WARMUP_COUNT):
            node.publish(TOPIC, {"id": -1, "ts": 0.0, "body": BODY}, guarantee=guarantee)
        publish, clock = node.publish, time.perf_counter
        cpu, wall = cpu_s(), clock()
        for i in range(count):
            publish(TOPIC, {"id": i, "ts": clock(), "body": BODY}, guarantee=guarantee)
        cpu, wall = cpu_s() - cpu, clock() - wall
        wait_for_file(folder / "done")
    report("publisher", count, cpu, wall)


def zc_subscriber(folder: Path, count: int) -> None:
    import zcluster

    marks = Marks(count)
    wait_for_file(folder / "address")
    seeds = [(folder / "address").read_text()]
    with zcluster.Node("subscriber", bind="127.0.0.1:0", seeds=seeds) as node:
        node.subscribe(TOPIC, lambda topic, message, sender: marks.saw(message))
        marks.wait_and_report(folder)


def raw_publisher(folder: Path, count: int, _: str) -> None:
    import msgpack
    import zmq

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, count + WARMUP_COUNT)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    (folder / "address").write_text(str(port))
    wait_for_file(folder / "ready")
    frame = b"t" + TOPIC.encode() + b"\0"
    for _ in range(WARMUP_COUNT):  # until the subscriber has seen one
        pub.send(frame + msgpack.packb({"id": -1, "ts": 0.0, "body": BODY}))
        time.sleep(0.001)
    send_counted(pub.send, frame, count, folder)
    pub.close(0)
    context.term()


def raw_subscriber(folder: Path, count: int) -> None:
    import zmq

    wait_for_file(folder / "address")
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, count + WARMUP_COUNT)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{(folder / 'address').read_text()}")
    (folder / "ready").write_text("")
    sub.setsockopt(zmq.RCVTIMEO, int(RUN_TIMEOUT_S * 1000))
    recv = sub.recv
    receive_counted(lambda: recv()[3:], count, folder)  # after the topic's 3 bytes
    sub.close(0)
    context.term()


def zc_sender(folder: Path, count: int, guarantee_name: str) -> None:
    import zcluster

    guarantee = zcluster.DeliveryGuarantee[guarantee_name]
    wait_for_file(folder / "address")
    seeds = [(folder / "address").read_text()]
    with zcluster.Node("sender", bind="127.0.0.1:0", seeds=seeds) as node:
        up = lambda: (m := node.member("receiver")) is not None and m.status.is_live  # noqa: E731
        if not node.wait_for(up, READY_TIMEOUT_S):
            raise SystemExit("the receiver is not up")
        for _ in range(WARMUP_COUNT):
            node.send("receiver", "h", {"id": -1, "ts": 0.0, "body": BODY}, guarantee=guarantee)
        send, clock = node.send, time.perf_counter
        cpu, wall = cpu_s(), clock()
        acks = [
            send("receiver", "h", {"id": i, "ts": clock(), "body": BODY}, guarantee=guarantee)
            for i in range(count)
        ]
        for ack in acks:
            if ack is not None and not ack.wait(RUN_TIMEOUT_S).is_final:
                raise SystemExit("an acknowledgement is still pending")
        cpu, wall = cpu_s() - cpu, clock() - wall
        wait_for_file(folder / "done")
    report("publisher", count, cpu, wall)


def zc_receiver(folder: Path, count: int) -> None:
    import zcluster

    marks = Marks(count)
    node = zcluster.Node("receiver", bind="127.0.0.1:0")
    node.register("h", lambda message, sender: marks.saw(message))
    with node:
        (folder / "address").write_text(node.address)
        marks.wait_and_report(folder)


def raw_sender(folder: Path, count: int, _: str) -> None:
    import msgpack
    import zmq

    wait_for_file(folder / "address")
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.SNDHWM, count + WARMUP_COUNT)
    dealer.connect(f"tcp://127.0.0.1:{(folder / 'address').read_text()}")
    for _ in range(WARMUP_COUNT):
        dealer.send(msgpack.packb({"id": -1, "ts": 0.0, "body": BODY}))
    send_counted(dealer.send, b"", count, folder)
    dealer.close(0)
    context.term()


def raw_receiver(folder: Path, count: int) -> None:
    import zmq

    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, count + WARMUP_COUNT)
    router.setsockopt(zmq.RCVTIMEO, int(RUN_TIMEOUT_S * 1000))
    port = router.bind_to_random_port("tcp://127.0.0.1")
    (folder / "address").write_text(str(port))
    recv = router.recv_multipart
    receive_counted(lambda: recv()[1], count, folder)  # after the routing id
    router.close(0)
    context.term()


ROLES = {
    "zcluster": (zc_publisher, zc_subscriber),
    "raw": (raw_publisher, raw_subscriber),
    "zcluster-direct": (zc_sender, zc_receiver),
    "raw-direct": (raw_sender, raw_receiver),
}


def run(kind: str, count: int, guarantee: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        me = [
            sys.executable,
            __file__,
            "--role",
            kind,
            "--folder",
            folder,
            "--messages",
            str(count),
        ]
        publisher = subprocess.Popen(
            [*me, "--publisher", "--guarantee", guarantee], stdout=subprocess.PIPE, text=True
        )
        subscriber = subprocess.Popen(me, stdout=subprocess.PIPE, text=True)
        try:
            out = subscriber.communicate(timeout=RUN_TIMEOUT_S)[0]
            out += publisher.communicate(timeout=RUN_TIMEOUT_S)[0]
        finally:
            for process in (publisher, subscriber):
                if process.poll() is None:
                    process.kill()  # a child of ours, by its pid
                    process.wait()
    figures: dict[str, float] = {}
    for line in out.splitlines():
        figures |= json.loads(line)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--guarantee", default="AT_MOST_ONCE")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--direct", action="store_true", help="Node.send to a handler")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        publisher, subscriber = ROLES[args.role]
        if args.publisher:
            publisher(Path(args.folder), args.messages, args.guarantee)
        else:
            subscriber(Path(args.folder), args.messages)
        return
    what = "direct sends (sender | receiver)" if args.direct else "publications"
    print(
        f"{args.messages:,} {what} per run, {args.guarantee} for zcluster; CPU and wall µs "
        "per message of each process, all its threads"
    )
    kinds = ("raw-direct", "zcluster-direct") if args.direct else ("raw", "zcluster")
    for rep in range(1, args.repeat + 1):
        for kind in kinds:
            f = run(kind, args.messages, args.guarantee)
            print(
                f"  rep {rep} {kind:15s} publisher cpu {f['publisher_cpu_us']:5.2f} wall "
                f"{f['publisher_wall_us']:5.2f} | subscriber cpu {f['subscriber_cpu_us']:5.2f} "
                f"wall {f['subscriber_wall_us']:5.2f}"
            )


if __name__ == "__main__":
    main()
