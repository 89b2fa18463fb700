"""Membership at scale on the simulated network: the curve from a few to a thousand members.

For each size, every node is started at once, joining through the first; then:

- converged: virtual seconds until every node sees every node up with one view;
- join wall: wall seconds that took (every member also tells every other which topics it
  reads, once, and each join is news that gossip carries to everyone);
- steady: once the join has settled (every LISTEN answered, no gossip left), the messages
  each member receives per virtual second, and virtual seconds per wall second;
- down everywhere: virtual seconds from a crash until every member holds the crashed one
  down, for ``--crashes`` crashes one after the other (median and worst).

python benchmarks/bench_sim.py [--sizes 3 10 30 100 300 1000] [--seconds 10] [--crashes 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from zcluster import MemberStatus
from zcluster.testing.sim import SimNetwork

SETTLE_TIMEOUT_S = 120.0


def converged(net: SimNetwork) -> bool:
    running = {n.node_id for n in net.live()}
    return net.views_agree() and all(
        all(n.view().get(other) is MemberStatus.UP for other in running) for n in net.live()
    )


def settled(net: SimNetwork) -> bool:
    """The join is over: every member listened to every other, and no gossip is left."""
    size = len(net.live())
    return all(len(n.core.listeners()) == size - 1 and not n.core.table.relay for n in net.live())


def received(net: SimNetwork) -> int:
    return sum(n.core.counters["messages_received"] for n in net.live())


def down_everywhere(net: SimNetwork, victim: str) -> float:
    """Crash ``victim``; virtual seconds until every member holds it down."""
    net.crash(victim)
    crashed_at = net.now
    if not net.run_until(lambda: net.all_see(victim, MemberStatus.DOWN), 30):
        raise RuntimeError(f"{victim} not down everywhere")
    took = net.now - crashed_at
    net.run_until(lambda: not any(n.core.table.relay for n in net.live()), 10)  # gossip over
    return took


def measure(size: int, seconds: float, crashes: int, seed: int) -> dict[str, float]:
    net = SimNetwork(seed)
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])
    started = time.perf_counter()
    if not net.run_until(lambda: converged(net), SETTLE_TIMEOUT_S):
        raise RuntimeError(f"{size} nodes did not converge")
    result = {"converged": net.now, "join_wall": time.perf_counter() - started}
    if not net.run_until(lambda: settled(net), SETTLE_TIMEOUT_S):
        raise RuntimeError(f"{size} nodes did not settle")
    before, started = received(net), time.perf_counter()
    net.run_for(seconds)
    result["speed"] = seconds / (time.perf_counter() - started)
    result["received"] = (received(net) - before) / size / seconds
    rng = random.Random(seed)
    victims = rng.sample([n.node_id for n in net.live()], min(crashes, size - 2))
    times = [down_everywhere(net, victim) for victim in victims]
    result["down_median"] = statistics.median(times)
    result["down_worst"] = max(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 10, 30, 100, 300, 1000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--crashes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    header = (
        "nodes  converged (virtual s)  join (wall s)  down everywhere: median / worst (s)"
        "  received per node per s  steady: virtual s per wall s"
    )
    print(header)
    for size in args.sizes:
        r = measure(size, args.seconds, args.crashes, args.seed)
        print(
            f"{size:>5} {r['converged']:>22.2f} {r['join_wall']:>14.1f}"
            f" {r['down_median']:>22.2f} / {r['down_worst']:<13.2f}"
            f" {r['received']:>22.1f} {r['speed']:>29.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
