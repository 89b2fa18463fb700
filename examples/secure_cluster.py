"""A cluster that only lets its own nodes in (curve-mutual), and an intruder that fails.

Three nodes get a Curve key pair each and an authorized-keys directory of their public
halves, form a cluster, publish and send to one another over encrypted connections.
Then an intruder with a key pair of its own (not in the directory) tries to join
through the same seed, claiming to be one of the members: it is refused at the
handshake, counted, and the cluster never hears of it.

    python examples/secure_cluster.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from zcluster import JoinTimeout, Node, SecurityConfig
from zcluster.security.keys import write_curve_key_pair

NODES = ("store", "billing", "audit")


def security(keys: Path, node_id: str, seed_keys: dict[str, Path]) -> SecurityConfig:
    return SecurityConfig(
        "curve-mutual",
        key=keys / f"{node_id}.key_secret",
        seed_keys=seed_keys,
        authorized_keys=keys / "authorized",
    )


def main() -> None:
    keys = Path(tempfile.mkdtemp(prefix="zcluster-keys-"))
    try:
        (keys / "authorized").mkdir()
        for node_id in (*NODES, "intruder"):
            public, _ = write_curve_key_pair(keys, node_id)
            if node_id != "intruder":  # the intruder's key is nowhere authorized
                shutil.copy(public, keys / "authorized")
        run(keys)
    finally:
        shutil.rmtree(keys)


def run(keys: Path) -> None:
    with Node("store", security=security(keys, "store", {})) as store:
        seed_keys = {store.address: keys / "store.key"}
        nodes = [
            Node(node_id, seeds=[store.address], security=security(keys, node_id, seed_keys))
            for node_id in NODES[1:]
        ]
        for node in nodes:
            node.start()
        try:
            billing, audit = nodes
            seen: list[str] = []
            audit.subscribe(
                "orders", lambda topic, order, sender: seen.append(f"{sender}: {order}")
            )
            while "audit" not in store.subscribers("orders"):
                time.sleep(0.05)
            store.publish("orders", "order 1 (encrypted on the wire)")
            billing.register("bill", lambda order, sender: f"billed {order} for {sender}")
            print(store.request("billing", "bill", "order 1", timeout=5))
            while not seen:
                time.sleep(0.05)
            print(f"audit received {seen[0]}")
            print("members:", ", ".join(m.node_id for m in store.members()))

            intruder = Node(
                "billing",  # claims a member's id, with a key nobody authorized
                seeds=[store.address],
                security=SecurityConfig(
                    "curve-mutual",
                    key=keys / "intruder.key_secret",
                    seed_keys=seed_keys,
                    authorized_keys=keys / "authorized",
                ),
            )
            try:
                intruder.start(timeout=2)
            except JoinTimeout as exc:
                print(f"intruder refused: {exc}")
            refused = store.stats().get("auth_refused_key_unknown", 0)
            print(f"handshakes refused by store (key unknown): {refused}")
            print("members after the attempt:", ", ".join(m.node_id for m in store.members()))
        finally:
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
