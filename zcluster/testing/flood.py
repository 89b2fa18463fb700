"""A hostile peer: floods one node's ROUTER with garbage, bombs and stale messages.

Run several of these at once against a node to check that it stays up, keeps
serving healthy peers and bounds its memory (tests/hostile)::

    python -m zcluster.testing.flood 127.0.0.1:7000 --seconds 10 --seed 1

Every message is one a peer on the network could send without any key:
random frames, wrong frame counts, deeply nested or oversized headers,
declared lengths far beyond the data, lists at the wire's limits, well-formed
but stale acknowledgements, fetches of many ranges, and large payloads of
valid msgpack that decode to millions of objects, sent to the built-in
``zcluster.view`` handler. The flood is bounded in time; it prints what it
sent as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

import msgpack
import zmq

from zcluster.wire import MAX_LIST_COUNT, Kind

#: one flooding process sends from this many connections (each a DEALER of its own)
CONNECTIONS_COUNT = 4
#: a send that finds the queue full waits this long for room before trying the next one
SEND_WAIT_MS = 10

Shape = Callable[[random.Random, str], list[bytes]]


def _header(kind: Kind, sender: str, body: list[object], seq: int = 1) -> bytes:
    return msgpack.packb([1, int(kind), sender, 1, seq, body])  # type: ignore[no-any-return]


def random_frames(rng: random.Random, sender: str) -> list[bytes]:
    return [rng.randbytes(rng.randrange(0, 256)) for _ in range(rng.randrange(1, 5))]


def wrong_frame_count(rng: random.Random, sender: str) -> list[bytes]:
    header = _header(Kind.SEND, sender, ["h"])
    return [header] if rng.random() < 0.5 else [header, b"", b"extra"]


def deep_nesting(rng: random.Random, sender: str) -> list[bytes]:
    depth = rng.choice((1000, 100_000, 500_000))
    return [b"\x91" * depth + b"\xc0", b""]


def huge_declared_length(rng: random.Random, sender: str) -> list[bytes]:
    # an array32 / str32 / bin32 that claims 4 GiB and carries a few bytes
    return [rng.choice((b"\xdd", b"\xdb", b"\xc6")) + b"\xff\xff\xff\xff" + b"\x00" * 16, b""]


def nested_lists(rng: random.Random, sender: str) -> list[bytes]:
    """A 1 MiB header of ten lists of 100,000 empty lists: a million objects to build."""
    body: list[object] = [[[]] * (MAX_LIST_COUNT - 1)] * 10
    return [_header(Kind.LISTEN, sender, body), b""]


def long_list(rng: random.Random, sender: str) -> list[bytes]:
    items = list(range(MAX_LIST_COUNT + 1))
    return [_header(Kind.LISTEN, sender, [items]), b""]


def stale_acks(rng: random.Random, sender: str) -> list[bytes]:
    selective = list(range(2, 100_002, 2))[:50_000]
    body = [1, 1, rng.randrange(1, 1000), 1, selective, [], 1, []]
    return [_header(Kind.DATA_ACK, sender, body, rng.randrange(1, 2**32)), b""]


def many_ranges(rng: random.Random, sender: str) -> list[bytes]:
    ranges = [[i * 10 + 1, i * 10 + 5] for i in range(1000)]
    return [_header(Kind.FETCH, sender, ["prices", ranges, "127.0.0.1:9"]), b""]


def truncated_header(rng: random.Random, sender: str) -> list[bytes]:
    header = _header(Kind.PING, sender, [7, "127.0.0.1:9"])
    return [header[: rng.randrange(1, len(header))], b""]


def _bomb(size: int) -> bytes:
    """Valid msgpack of ``size`` bytes that decodes to ``size - 5`` empty lists."""
    count = size - 5
    return b"\xdd" + count.to_bytes(4, "big") + b"\x90" * count


def view_bomb(rng: random.Random, sender: str) -> list[bytes]:
    """A SEND to the built-in handler with the largest payload a node takes by default."""
    payload = _bomb(1024 * 1024)
    return [_header(Kind.SEND, sender, ["zcluster.view"], rng.randrange(1, 2**32)), payload]


def oversized(rng: random.Random, sender: str) -> list[bytes]:
    """The same, 8 MiB: past the largest frame a node takes by default."""
    payload = _bomb(8 * 1024 * 1024)
    return [_header(Kind.SEND, sender, ["zcluster.view"], rng.randrange(1, 2**32)), payload]


def big_integers(rng: random.Random, sender: str) -> list[bytes]:
    """Well-formed messages with numbers at the edges of their range."""
    top = 2**64 - 1
    body = rng.choice(
        (
            [top, "127.0.0.1:9"],  # PING: the largest probe id
            [top, top, top, top, [top], [[top, "x"]], top, [top]],  # DATA_ACK
        )
    )
    kind = Kind.PING if len(body) == 2 else Kind.DATA_ACK
    return [_header(kind, sender, body, rng.randrange(1, 2**32)), b""]


SHAPES: dict[str, Shape] = {
    "random": random_frames,
    "frames": wrong_frame_count,
    "deep": deep_nesting,
    "declared": huge_declared_length,
    "long": long_list,
    "nested": nested_lists,
    "stale": stale_acks,
    "fetch": many_ranges,
    "truncated": truncated_header,
    "view": view_bomb,
    "oversized": oversized,
    "integers": big_integers,
}


def flood(target: str, seconds: float, seed: int, shapes: list[str]) -> dict[str, int]:
    """Send the given shapes round-robin to ``target`` for ``seconds``; counts per shape."""
    rng = random.Random(seed)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sockets = []
    for _ in range(CONNECTIONS_COUNT):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.connect(f"tcp://{target}")
        sockets.append(sock)
    sent = dict.fromkeys(shapes, 0)
    # Building a bomb costs more than sending it: each shape is built a few times, reused.
    made = {name: [SHAPES[name](rng, f"flood{seed}") for _ in range(4)] for name in shapes}
    deadline = time.monotonic() + seconds
    turn = 0
    try:
        while time.monotonic() < deadline:
            name = shapes[turn % len(shapes)]
            frames = made[name][turn % 4]
            sock = sockets[turn % CONNECTIONS_COUNT]
            turn += 1
            if sock.poll(SEND_WAIT_MS, zmq.POLLOUT):
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
                sent[name] += 1
    finally:
        for sock in sockets:
            sock.close(linger=0)
        ctx.term()
    return sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="HOST:PORT of the node's ROUTER")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated")
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        parser.error(f"unknown shapes {unknown}; known: {', '.join(SHAPES)}")
    print(json.dumps(flood(args.target, args.seconds, args.seed, shapes)), flush=True)


if __name__ == "__main__":
    main()
