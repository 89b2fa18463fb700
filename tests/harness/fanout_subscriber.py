"""A subscriber process for the fan-out scenarios: joins, subscribes, reports what it got.

    python fanout_subscriber.py NODE_ID SEED_ADDRESS COUNT [--loss RATE] [--drop FIRST LAST]

Prints ``ready`` once subscribed, then one JSON line: the numbers received
(in order) and the losses reported, once all COUNT are accounted for (or
after its deadline).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from zcluster import Node, PublicationLoss
from zcluster.testing import LinkConditions, inject_inbound_faults

DEADLINE_S = 90.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("node_id")
    parser.add_argument("seed")
    parser.add_argument("count", type=int)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--drop", type=int, nargs=2, default=None)
    args = parser.parse_args()

    node = Node(args.node_id, seeds=[args.seed])
    if args.loss:
        inject_inbound_faults(node, LinkConditions(packet_loss_rate=args.loss), seed=11)
    if args.drop:
        first, last = args.drop

        def drop_range(event: Any) -> tuple[float, ...]:
            numbered = event.topic == "t" and event.envelope.kind.name == "PUBLISH"
            return () if numbered and first <= event.envelope.message.seq <= last else (0.0,)

        node.inbound_faults = drop_range
    received: list[int] = []
    losses: list[PublicationLoss] = []
    lock = threading.Lock()
    accounted = threading.Event()

    def settle() -> None:
        if len(received) + sum(loss.count for loss in losses) >= args.count:
            accounted.set()

    def on_message(topic: str, message: int, sender: str) -> None:
        with lock:
            received.append(message)
            settle()

    def on_loss(loss: PublicationLoss) -> None:
        with lock:
            losses.append(loss)
            settle()

    node.on_publication_loss(on_loss)
    node.subscribe("t", on_message)
    with node:
        print("ready", flush=True)
        accounted.wait(DEADLINE_S)
        time.sleep(0.2)  # a duplicate arriving late would still be counted
        with lock:
            report = {
                "received": received,
                "losses": [[x.first, x.last] for x in losses],
            }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
