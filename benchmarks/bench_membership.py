"""What membership costs an idle node on real sockets, by cluster size: CPU and descriptors.

Starts N ``zcluster node`` processes on 127.0.0.1 joined through the first, lets them
settle, then reads each process's CPU time and open file descriptors from /proc (Linux)
over a quiet window. Nothing is published or sent: what remains is membership.

python benchmarks/bench_membership.py [--sizes 2 8 16 32] [--settle 10] [--window 20]
    [--python PATH]   # another tree's interpreter/venv, to compare releases in one run
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port whose successor is free too (the PUB binds PORT + 1)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as pub:
            try:
                pub.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def measure(python: str, size: int, settle: float, window: float) -> tuple[float, float]:
    """CPU per node (percent of one core) and open descriptors per node, when idle."""
    seed = f"127.0.0.1:{free_port()}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(size):
            bind = seed if i == 0 else "127.0.0.1:0"
            args = [python, "-m", "zcluster", "node", "--id", f"n{i}", "--bind", bind]
            if i:
                args += ["--seed", seed]
            args += ["--log-level", "warning"]
            processes.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        time.sleep(settle)
        if any(p.poll() is not None for p in processes):
            raise RuntimeError(f"a node of the {size}-node cluster exited")
        before = [cpu_seconds(p.pid) for p in processes]
        time.sleep(window)
        after = [cpu_seconds(p.pid) for p in processes]
        fds = sum(descriptors(p.pid) for p in processes) / size
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    cpu = sum(a - b for a, b in zip(after, before, strict=True)) / size / window
    return 100 * cpu, fds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 8, 16, 32])
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    print(f"{'nodes':>6} {'idle CPU per node (% of a core)':>32} {'open fds per node':>18}")
    for size in args.sizes:
        cpu, fds = measure(args.python, size, args.settle, args.window)
        print(f"{size:>6} {cpu:>32.3f} {fds:>18.1f}", flush=True)


if __name__ == "__main__":
    main()
