"""What a pyzmq send costs a thread while another Python thread of the process is busy.

    python benchmarks/bench_gil_handoff.py [--messages 20000]

pyzmq releases the GIL around every ``send`` and ``recv``. In a process with
one busy Python thread that is free; with two (a `Node`'s caller and its
loop, or its loop and its callback thread), each call hands the GIL to the
other thread, which keeps it until it blocks or its switch interval
(``sys.getswitchinterval()``, 5 ms) runs out. This sends a two-frame direct
message (``[header, payload]`` on a DEALER, as a guaranteed send does) with a
little Python work per message, alone and next to a thread that computes,
and prints the sending thread's CPU and wall time per message. Raw pyzmq
benchmarks run one thread per process and never pay this.
"""

from __future__ import annotations

import argparse
import threading
import time

import zmq

HEADER = b"h" * 40
PAYLOAD = b"p" * 90
#: Python work per message besides the sends (a sender checks, numbers and encodes)
WORK_STEPS = 30


def run(messages: int, busy: bool) -> tuple[float, float]:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    dealer = context.socket(zmq.DEALER)
    stop = threading.Event()
    try:
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.RCVHWM, 0)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send_multipart([b"hello", b""])
        if not router.poll(5000):
            raise SystemExit("the DEALER did not connect")
        router.recv_multipart()

        def compute() -> None:
            while not stop.is_set():
                sum(range(200))

        worker = threading.Thread(target=compute, daemon=True)
        if busy:
            worker.start()
        send, more, last = zmq.backend.Socket.send, zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(messages):
            send(dealer, HEADER, more)
            send(dealer, PAYLOAD, last)
            total = 0
            for step in range(WORK_STEPS):
                total += step
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        stop.set()
        if busy:
            worker.join(5)
        return cpu / messages * 1e6, wall / messages * 1e6
    finally:
        stop.set()
        router.close(0)
        dealer.close(0)
        context.term()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    print(f"{args.messages:,} two-frame DEALER sends, µs per message of the sending thread")
    for busy in (False, True):
        cpu, wall = run(args.messages, busy)
        label = "next to a busy Python thread" if busy else "alone"
        print(f"  {label:30} cpu {cpu:7.2f}   wall {wall:9.2f}")


if __name__ == "__main__":
    main()
