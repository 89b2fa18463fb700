"""Pub/sub fan-out across processes: one publisher, several subscriber processes.

    python examples/fanout.py --subscribers 3 --messages 10000

The publisher forms a cluster, starts the subscriber processes (this same
script with --role subscriber), waits until each has confirmed it receives
the topic, publishes the stream, and prints what every subscriber got.
Exits 0 when every subscriber received every message, in order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading

from zcluster import Node

TOPIC = "fanout"
JOIN_TIMEOUT_S = 30.0
RECEIVE_TIMEOUT_S = 120.0


def publisher(subscribers: int, messages: int) -> int:
    with Node("publisher") as node:
        names = [f"subscriber-{i}" for i in range(1, subscribers + 1)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--role",
                    "subscriber",
                    "--id",
                    name,
                    "--seed",
                    node.address,
                    "--messages",
                    str(messages),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]
        try:
            if not node.wait_for(lambda: set(names) <= node.subscribers(TOPIC), JOIN_TIMEOUT_S):
                print("subscribers did not join in time")
                return 1
            print(f"{subscribers} subscribers ready; publishing {messages} messages")
            for seq in range(messages):
                node.publish(TOPIC, seq)
            results = [json.loads(p.communicate(timeout=RECEIVE_TIMEOUT_S)[0]) for p in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    complete = True
    for result in results:
        ok = result["received"] == messages and result["in_order"]
        complete &= ok
        got, in_order = result["received"], result["in_order"]
        print(f"{result['id']}: received {got}/{messages}, in order: {in_order}")
    print("all subscribers received every message in order" if complete else "messages missing")
    return 0 if complete else 1


def subscriber(node_id: str, seed: str, messages: int) -> int:
    received: list[int] = []
    done = threading.Event()

    def on_message(topic: str, seq: int, sender: str) -> None:
        received.append(seq)
        if len(received) == messages:
            done.set()

    node = Node(node_id, seeds=[seed])
    node.subscribe(TOPIC, on_message)
    with node:
        done.wait(RECEIVE_TIMEOUT_S)
    in_order = received == list(range(len(received)))
    print(json.dumps({"id": node_id, "received": len(received), "in_order": in_order}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["publisher", "subscriber"], default="publisher")
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--id", default="subscriber")
    parser.add_argument("--seed")
    args = parser.parse_args()
    if args.role == "subscriber":
        return subscriber(args.id, args.seed, args.messages)
    return publisher(args.subscribers, args.messages)


if __name__ == "__main__":
    sys.exit(main())
