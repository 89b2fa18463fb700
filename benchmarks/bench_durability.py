"""What a state_dir costs: guaranteed sends with the durable store, next to without.

    python benchmarks/bench_durability.py [--messages 20000] [--repeat 3]

Two nodes in one process (a sender and a receiver, each with its own state_dir when
durable). For AT_LEAST_ONCE and EXACTLY_ONCE, ``--messages`` sends are timed until
every acknowledgement is final, in memory and with ``state_sync`` normal and full, in
the same run, interleaved round by round (the machine is shared: ratios, not absolute
rates, are the figures to read). Each figure is the best of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from zcluster import AckStatus, DeliveryGuarantee, Node

GUARANTEES = (DeliveryGuarantee.AT_LEAST_ONCE, DeliveryGuarantee.EXACTLY_ONCE)
MODES = ("memory", "normal", "full")
WAIT_S = 120.0


def run(mode: str, guarantee: DeliveryGuarantee, messages: int, root: Path) -> float:
    """Messages per second, sent and acknowledged."""
    durable = {} if mode == "memory" else {"state_sync": mode}
    got = 0

    def handle(message: object, sender: str) -> None:
        nonlocal got
        got += 1

    with tempfile.TemporaryDirectory(dir=root) as where:
        state = {"state_dir": Path(where) / "rx", **durable} if durable else {}
        with Node("rx", **state) as receiver:  # type: ignore[arg-type]
            receiver.register("h", handle)
            state = {"state_dir": Path(where) / "tx", **durable} if durable else {}
            with Node("tx", seeds=[receiver.address], **state) as sender:  # type: ignore[arg-type]
                sender.wait_for(lambda: sender.member("rx") is not None, 10)
                start = time.perf_counter()
                acks = [sender.send("rx", "h", i, guarantee=guarantee) for i in range(messages)]
                deadline = time.monotonic() + WAIT_S
                for ack in acks:
                    assert ack is not None
                    ack.wait(max(0.0, deadline - time.monotonic()))
                elapsed = time.perf_counter() - start
                assert all(a is not None and a.status is AckStatus.DELIVERED for a in acks)
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    best: dict[tuple[str, DeliveryGuarantee], float] = {}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(args.repeat):
            for guarantee in GUARANTEES:
                for mode in MODES:
                    rate = run(mode, guarantee, args.messages, Path(root))
                    key = (mode, guarantee)
                    best[key] = max(best.get(key, 0.0), rate)
    print(f"{'guarantee':<15}{'state':<10}{'msgs/s':>10}{'vs memory':>11}")
    for guarantee in GUARANTEES:
        memory = best[("memory", guarantee)]
        for mode in MODES:
            rate = best[(mode, guarantee)]
            print(f"{guarantee.name:<15}{mode:<10}{rate:>10,.0f}{rate / memory:>10.2f}x")


if __name__ == "__main__":
    main()
