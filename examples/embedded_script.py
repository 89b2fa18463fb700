"""Embedding a node in an ordinary script (blocking API).

    python examples/embedded_script.py               # forms its own cluster
    python examples/embedded_script.py --seed H:P    # joins an existing one

The script joins, watches membership, answers a "status" request and
publishes a few readings on "sensors.temperature".
"""

from __future__ import annotations

import argparse

from zcluster import Member, Node

TOPIC = "sensors.temperature"
SUBSCRIBERS_WAIT_S = 3.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--id", default="sensor-1")
    args = parser.parse_args()

    def on_change(member: Member, previous: Member | None) -> None:
        print(f"membership: {member.node_id} is {member.status}")

    node = Node(args.id, seeds=args.seed)
    node.on_member_change(on_change)
    node.register("status", lambda message, sender: {"node": args.id, "ok": True})
    with node:
        print(f"{node.node_id} is up at {node.address}")
        if args.seed:
            # A publication reaches the members subscribed when it is sent: give those of
            # the cluster we joined a moment to be confirmed (a running `zcluster sub`).
            node.wait_for(lambda: bool(node.subscribers(TOPIC)), SUBSCRIBERS_WAIT_S)
        print(f"publishing to {len(node.subscribers(TOPIC))} subscriber(s)")
        for reading in (21.5, 21.7, 21.6):
            node.publish(TOPIC, {"celsius": reading})
        print("members:", ", ".join(f"{m.node_id}={m.status}" for m in node.members()))
        # A second node in the same script, to show the view from elsewhere.
        with Node("dashboard", seeds=[node.address]) as dashboard:
            print("status:", dashboard.request(args.id, "status", None))


if __name__ == "__main__":
    main()
