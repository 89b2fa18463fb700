"""Where a secured message's extra time goes, one part at a time, in one process.

    python benchmarks/bench_security_cost.py [--messages 100000] [--repeat 5]

``zcluster bench --scenarios security`` measures whole nodes; this takes apart what a
secured connection adds per message, with the bench's message (about 90 bytes, two
frames as a direct send has them):

- **encryption**: CPU time of the whole process (the sending thread and libzmq's I/O
  thread, which encrypts on one side and decrypts on the other) to move the messages
  DEALER -> ROUTER over 127.0.0.1, CURVE minus plain;
- **User-Id**: the receiving thread's CPU time to read messages already queued on a
  CURVE ROUTER as a secured node does (``receive_with_user_id``: each frame with its
  properties, the first one's User-Id read) minus as an unsecured one does
  (``receive_message``). A pyzmq ThreadAuthenticator lets every key in and gives the
  connection its User-Id, as a node's ZAP handler does.

The handshake and a node's AUTH happen once per connection, before the first message:
they are outside both figures. Each figure is the lowest of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import msgpack
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from zcluster.runtime.secured import receive_with_user_id
from zcluster.runtime.transport import receive_message

HEADER = b"h" * 40
PAYLOAD = msgpack.packb({"id": 1, "ts": 1.0, "body": b"x" * 64})
QUEUE_TIMEOUT_S = 60.0


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pair(context: zmq.Context[zmq.Socket[bytes]], curve: bool) -> tuple[zmq.Socket[bytes], ...]:
    """A ROUTER and a DEALER connected to it over 127.0.0.1, with unbounded queues."""
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    if curve:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        router.setsockopt(zmq.CURVE_SERVER, 1)
        router.setsockopt(zmq.CURVE_SECRETKEY, server_secret)
        dealer.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, client_public)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send_multipart([HEADER, PAYLOAD])  # the handshake, before anything is timed
    router.recv_multipart()
    return router, dealer


def read(router: zmq.Socket[bytes], count: int, receive: Callable[..., list[bytes]]) -> None:
    received = 0
    while received < count:
        try:
            receive(router)
            received += 1
        except zmq.Again:
            if not router.poll(int(QUEUE_TIMEOUT_S * 1000)):
                raise SystemExit(f"{received} of {count} messages arrived") from None


def transfer_us(context: zmq.Context[zmq.Socket[bytes]], curve: bool, count: int) -> float:
    """Process CPU time per message sent and received (µs)."""
    router, dealer = pair(context, curve)
    try:
        started_s = process_cpu_s()
        for _ in range(count):
            dealer.send(HEADER, zmq.SNDMORE)
            dealer.send(PAYLOAD)
        read(router, count, receive_message)
        return (process_cpu_s() - started_s) / count * 1e6
    finally:
        router.close()
        dealer.close()


def read_us(
    context: zmq.Context[zmq.Socket[bytes]], receive: Callable[..., list[bytes]], count: int
) -> float:
    """The reading thread's CPU time per message already queued on a CURVE ROUTER (µs)."""
    router, dealer = pair(context, curve=True)
    try:
        for _ in range(count):
            dealer.send(HEADER, zmq.SNDMORE)
            dealer.send(PAYLOAD)
        if not router.poll(int(QUEUE_TIMEOUT_S * 1000)):
            raise SystemExit("no message arrived")
        time.sleep(max(0.5, count / 100_000))  # the I/O thread has queued them all by then
        started_s = time.thread_time()
        read(router, count, receive)
        return (time.thread_time() - started_s) / count * 1e6
    finally:
        router.close()
        dealer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    authenticator = ThreadAuthenticator(context)
    authenticator.start()
    authenticator.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    try:
        rounds = range(args.repeat)
        plain = min(transfer_us(context, False, args.messages) for _ in rounds)
        curve = min(transfer_us(context, True, args.messages) for _ in rounds)
        bare = min(read_us(context, receive_message, args.messages) for _ in rounds)
        user_id = min(read_us(context, receive_with_user_id, args.messages) for _ in rounds)
    finally:
        authenticator.stop()
        context.term()
    size = len(HEADER) + len(PAYLOAD)
    print(f"{args.messages:,} messages of {size} bytes, lowest of {args.repeat} rounds")
    print(f"DEALER -> ROUTER, process CPU per message: plain {plain:.2f} us, CURVE {curve:.2f} us")
    print(f"  encryption and decryption: {curve - plain:+.2f} us per message")
    print(
        f"CURVE ROUTER read, thread CPU per message: {bare:.2f} us, with User-Id {user_id:.2f} us"
    )
    print(f"  the User-Id read: {user_id - bare:+.2f} us per message")


if __name__ == "__main__":
    main()
