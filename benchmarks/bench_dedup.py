"""Memory and time per entry of the duplicate window (MessageDeduplicator).

python benchmarks/bench_dedup.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from zcluster.delivery import MessageDeduplicator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    n = parser.parse_args().entries
    # Message ids as the wire makes them: (node id, 64-bit incarnation, sequence number).
    ids = [("node-17", 1_875_000_000_000 << 20 | 12345, seq) for seq in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    measured = MessageDeduplicator(capacity=n, expiry=3600.0)
    for message_id in ids:
        measured.is_duplicate(message_id)
    window_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()  # it slows every allocation: time another window without it
    del measured
    gc.collect()
    dedup = MessageDeduplicator(capacity=n, expiry=3600.0)
    started = time.perf_counter()
    for message_id in ids:
        dedup.is_duplicate(message_id)
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    for message_id in ids:
        dedup.is_duplicate(message_id)
    hit_s = time.perf_counter() - started
    id_bytes = sum(obj.__sizeof__() for obj in (ids[0], ids[0][1], ids[0][2]))
    print(f"{n} entries: {window_bytes / n:.0f} bytes per entry held by the window")
    print(f"  plus about {id_bytes} bytes per message id kept alive by it (a 3-tuple and two ints)")
    per_new, per_repeat = insert_s / n * 1e6, hit_s / n * 1e6
    print(f"  is_duplicate: {per_new:.2f} us per new id, {per_repeat:.2f} us per repeat")


if __name__ == "__main__":
    main()
