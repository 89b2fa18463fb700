"""A node under attack keeps serving: a hostile peer floods it for a few seconds with
garbage, bombs and stale messages while a member keeps asking it for work.

python examples/hostile_peer.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from zcluster import Node


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    seconds = parser.parse_args().seconds
    with Node("service") as service, Node("client", seeds=[service.address]) as client:
        service.register("double", lambda n, sender: 2 * n)
        # A process of its own, as an attacker on the network is.
        attack = [sys.executable, "-m", "zcluster.testing.flood", service.address]
        flood = subprocess.Popen([*attack, "--seconds", str(seconds)], stdout=subprocess.DEVNULL)
        answered = 0
        while flood.poll() is None:
            assert client.request("service", "double", answered, timeout=2.0) == 2 * answered
            answered += 1
            time.sleep(0.01)
        stats = service.stats()
        print(f"requests answered during the flood: {answered}, all correct")
        print(f"frames rejected as malformed: {stats.get('frames_rejected_router', 0)}")
        print(f"service still sees the client: {service.member('client').status}")


if __name__ == "__main__":
    main()
