"""Speed of the simulated network: simulated seconds per wall second, and cluster size.

python benchmarks/bench_sim.py [--sizes 5 50 200] [--seconds 30]
"""

from __future__ import annotations

import argparse
import time

from zcluster import MemberStatus
from zcluster.testing.sim import SimNetwork

CONVERGE_TIMEOUT_S = 60.0


def measure(size: int, seconds: float, seed: int = 1) -> tuple[float, float, float]:
    net = SimNetwork(seed)
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])

    def converged() -> bool:
        return net.views_agree() and all(
            len(n.core.members()) == size
            and all(m.status is MemberStatus.UP for m in n.core.members())
            for n in net.live()
        )

    started = time.perf_counter()
    if not net.run_until(converged, CONVERGE_TIMEOUT_S):
        raise RuntimeError(f"{size} nodes did not converge")
    join_wall = time.perf_counter() - started
    join_virtual = net.now
    started = time.perf_counter()
    net.run_for(seconds)
    wall = time.perf_counter() - started
    return join_virtual, join_wall, seconds / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 50, 200])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    columns = ("nodes", "join (virtual s)", "join (wall s)", "steady: sim s / wall s")
    print(" ".join(f"{c:>{max(6, len(c))}}" for c in columns))
    for size in args.sizes:
        seconds = args.seconds if size <= 50 else max(2.0, args.seconds / 10)
        join_virtual, join_wall, speed = measure(size, seconds)
        print(f"{size:>6} {join_virtual:>16.2f} {join_wall:>13.2f} {speed:>22.3g}")


if __name__ == "__main__":
    main()
