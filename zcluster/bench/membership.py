"""Membership of a cluster of processes: time to converge, time to see a crash.

Every process runs one ``Node``. The first forms the cluster; the others
start their interpreters, build their nodes, and wait for one signal, so that
interpreter start-up is not counted: from that signal they all join through
the first at once. Convergence is the time from the signal until every
process sees every other one UP. Then one process (never the seed) is
SIGKILLed by its pid, and detection is the time until every other process
sees it DOWN. Both are absolute times: raw ZeroMQ has no membership to
compare with. A cluster that does not converge, or a crash not seen
everywhere, within its bound is a result, not an error.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from multiprocessing.synchronize import Event
from typing import Any

from zcluster import Member, MemberStatus, Node
from zcluster.bench.processes import READY_TIMEOUT_S, Link, Workers, rss_bytes
from zcluster.bench.samples import Sample

#: every process must see every other one UP within this after the signal
CONVERGE_TIMEOUT_S = 30.0
#: every survivor must see the killed process DOWN within this
DETECT_TIMEOUT_S = 15.0
#: a converged cluster runs this long before the kill, as an undisturbed one would
SETTLE_S = 0.5
#: room for reports to travel after the bounds above
_REPORT_MARGIN_S = 10.0
_MEGABYTE = 1_000_000


def member_id(index: int) -> str:
    return f"bench-m{index}"


class _View:
    """When this process first saw every other member UP, and the victim DOWN."""

    def __init__(self, size: int, victim_id: str) -> None:
        self._size = size
        self._victim_id = victim_id
        self._statuses: dict[str, MemberStatus] = {}
        self.converged_s: float | None = None
        self.victim_down_s: float | None = None

    def on_change(self, member: Member, _previous: Member | None) -> None:
        now_s = time.perf_counter()
        self._statuses[member.node_id] = member.status
        if self.converged_s is None and self.up_count >= self._size - 1:
            self.converged_s = now_s
        if member.node_id == self._victim_id and member.status is MemberStatus.DOWN:
            self.victim_down_s = self.victim_down_s or now_s

    @property
    def up_count(self) -> int:
        return sum(1 for status in self._statuses.values() if status is MemberStatus.UP)


def _member(
    link: Link, seed: str | None, size: int, victim_id: str, go: Event, killed: Event
) -> None:
    view = _View(size, victim_id)
    node = Node(link.role, seeds=[seed] if seed else [])
    node.on_member_change(view.on_change)
    if seed is None:
        node.start()
        link.report("ready", address=node.address)
    else:
        link.report("armed")
    try:
        if not link.wait(go.is_set, READY_TIMEOUT_S):
            return
        if seed is not None:
            node.start(wait=False)
        link.wait(lambda: view.converged_s is not None, CONVERGE_TIMEOUT_S)
        link.report("converged", at_s=view.converged_s, up_count=view.up_count)
        if link.wait(killed.is_set, CONVERGE_TIMEOUT_S + READY_TIMEOUT_S):
            link.wait(lambda: view.victim_down_s is not None, DETECT_TIMEOUT_S)
            link.report("down", at_s=view.victim_down_s)
        link.wait_over(READY_TIMEOUT_S)
    finally:
        node.stop()


def membership(size: int) -> dict[str, Sample]:
    """Convergence and crash detection in a cluster of ``size`` processes."""
    victim_id = member_id(size - 1)
    with Workers(f"zcluster membership of {size}") as workers:
        go, killed = workers.event(), workers.event()
        workers.start(_member, member_id(0), None, size, victim_id, go, killed)
        seed = workers.expect("ready", READY_TIMEOUT_S, member_id(0))["address"]
        processes = {
            member_id(i): workers.start(_member, member_id(i), seed, size, victim_id, go, killed)
            for i in range(1, size)
        }
        for _ in range(size - 1):
            workers.expect("armed", READY_TIMEOUT_S)
        go_s = time.perf_counter()
        go.set()
        converged = [
            workers.expect("converged", CONVERGE_TIMEOUT_S + _REPORT_MARGIN_S) for _ in range(size)
        ]
        convergence = converge_sample(converged, go_s, size)
        if convergence.value is None:
            return {"converge": convergence, "detect": Sample(None, note="not run")}
        rss_mb = [rss_bytes(p.pid) / _MEGABYTE for p in processes.values() if p.pid is not None]
        time.sleep(SETTLE_S)
        kill_s = time.perf_counter()
        workers.kill(processes[victim_id])
        killed.set()
        downs = [
            workers.expect("down", DETECT_TIMEOUT_S + _REPORT_MARGIN_S) for _ in range(size - 1)
        ]
    cluster = {"processes_count": size, "rss_mb_per_process_median": statistics.median(rss_mb)}
    return {
        "converge": dataclasses.replace(convergence, extra=cluster),
        "detect": detect_sample(downs, kill_s, size, cluster),
    }


def converge_sample(reports: list[dict[str, Any]], go_s: float, size: int) -> Sample:
    """Seconds from the signal until the last process saw every other one UP; None, with
    a note, when some did not within the bound."""
    late = [r for r in reports if r["at_s"] is None]
    if late:
        fewest = min(r["up_count"] for r in late)
        note = (
            f"{len(late)} of {size} did not see all others up within "
            f"{CONVERGE_TIMEOUT_S:g} s (one saw {fewest} of {size - 1})"
        )
        return Sample(None, note=note)
    return Sample(max(r["at_s"] for r in reports) - go_s)


def detect_sample(
    downs: list[dict[str, Any]], kill_s: float, size: int, cluster: dict[str, Any]
) -> Sample:
    """Seconds from the kill until the last survivor saw the victim DOWN; None, with a
    note, when some did not within the bound."""
    seen = sorted(at_s - kill_s for r in downs if (at_s := r["at_s"]) is not None)
    extra = {**cluster, "survivors_count": size - 1, "saw_down_count": len(seen)}
    if seen:
        extra["first_s"], extra["median_s"] = seen[0], statistics.median(seen)
    if len(seen) < size - 1:
        missing = size - 1 - len(seen)
        note = f"{missing} of {size - 1} did not see it down within {DETECT_TIMEOUT_S:g} s"
        return Sample(None, note=note, extra=extra)
    return Sample(seen[-1], extra=extra)
