"""A node flooded by hostile peers stays up, keeps serving a healthy member and bounds
its memory; afterwards its memory comes back down and it goes on serving.

Real processes: the victim and a third member are ``zcluster node`` processes, three
flooders (``zcluster.testing.flood``, four connections each) send every shape of
garbage, bomb and stale message at the victim's ROUTER at full speed, and a healthy
member (this test's node) requests the victim's view all along.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import wait_until
from tests.hostile.cluster import rss_mb, up_in, victim_cluster
from zcluster import MemberStatus, Node
from zcluster.testing.flood import SHAPES
from zcluster.testing.processes import ProcessNode

FLOODERS_COUNT = 3
FLOOD_S = 15.0
#: after the flood the victim is watched serving this long
AFTER_S = 60.0
#: the victim's budget, small so that the ceiling below is tight enough to be crossed
BUDGET = {
    "ZCLUSTER_RECEIVE_QUEUE_MAX_BYTES": str(4 * 1024 * 1024),
    "ZCLUSTER_RECEIVE_QUEUES_MAX_BYTES": str(64 * 1024 * 1024),
    "ZCLUSTER_CALLBACK_QUEUE_MAX_BYTES": str(32 * 1024 * 1024),
    "ZCLUSTER_CALLBACK_QUEUE_SENDER_MAX_BYTES": str(8 * 1024 * 1024),
    "ZCLUSTER_MEMORY_TRIM_INTERVAL_S": "2",
}
#: what the process holds before any message (interpreter, libraries, sockets), at most
BASE_MB = 80
#: docs/architecture.md, "Memory": the receive queues of every connection together (16
#: let in: the members' four and the flooders' twelve), plus the callbacks' queue, plus
#: one message being decoded (a header of 1 MiB decodes to at most ~64 MiB)
CEILING_MB = BASE_MB + 64 + 32 + 64


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Node, ProcessNode, ProcessNode]]:
    with victim_cluster(monkeypatch, BUDGET) as nodes:
        yield nodes


@pytest.mark.timeout(FLOOD_S + AFTER_S + 60)
def test_a_flooded_node_stays_up_serves_and_bounds_its_memory(
    cluster: tuple[Node, ProcessNode, ProcessNode],
) -> None:
    healthy, victim, third = cluster
    start_mb = rss_mb(victim.pid)
    flood = [sys.executable, "-m", "zcluster.testing.flood", victim.address]
    flood += ["--seconds", str(FLOOD_S), "--shapes", ",".join(SHAPES)]
    # The flooders run at the lowest priority: attackers use their own machines' CPU,
    # not the members' (on this shared test machine they would starve the third member).
    flooders = [
        subprocess.Popen(
            [*flood, "--seed", str(seed)], stdout=subprocess.PIPE, preexec_fn=_lowest_priority
        )
        for seed in range(FLOODERS_COUNT)
    ]
    try:
        requests, peak_mb, not_up = _serve_while(healthy, victim, flooders)
        sent = [json.loads(f.communicate(timeout=30)[0]) for f in flooders]
    finally:
        for flooder in flooders:
            if flooder.poll() is None:
                flooder.kill()
                flooder.wait()
    assert all(sum(counts.values()) > 1000 for counts in sent), sent
    assert victim.running, victim.log()[-2000:]
    assert requests["failed"] == [], requests
    assert requests["ok"] >= FLOOD_S * 2, requests  # slower: a nested bomb takes ~80 ms
    assert not_up == set(), f"suspected during the flood: {not_up}"
    assert peak_mb < CEILING_MB, f"peak {peak_mb:.0f} MB, ceiling {CEILING_MB} MB"

    # Afterwards: memory back near where it started, and still serving, for a minute.
    assert wait_until(lambda: rss_mb(victim.pid) < start_mb + 30, 15, interval=0.5), (
        f"RSS {rss_mb(victim.pid):.0f} MB after the flood, {start_mb:.0f} MB before"
    )
    after, _, not_up = _serve_while(healthy, victim, [], AFTER_S)
    assert after["failed"] == [] and after["ok"] >= AFTER_S * 5, after
    assert not_up == set()
    assert up_in(third.members()) == {"healthy", "victim", "third"}


def _lowest_priority() -> None:
    os.nice(19)


def _serve_while(
    healthy: Node,
    victim: ProcessNode,
    flooders: list[subprocess.Popen[bytes]],
    at_least_s: float = 0.0,
) -> tuple[dict[str, Any], float, set[str]]:
    """The healthy member asks the victim for its view while the flooders run (or for
    ``at_least_s``): requests that succeeded and failed, the victim's peak RSS, and who
    was seen not UP by the healthy member or in the victim's own view."""
    ok, failed, peak_mb, not_up, slowest_s = 0, [], 0.0, set(), 0.0
    deadline = time.monotonic() + at_least_s
    while any(f.poll() is None for f in flooders) or time.monotonic() < deadline:
        asked = time.monotonic()
        try:
            view = healthy.request("victim", "zcluster.view", None, timeout=2.0)
            ok += 1
            slowest_s = max(slowest_s, time.monotonic() - asked)
            not_up |= {m["node_id"] for m in view["members"] if m["status"] != "up"}
        except Exception as exc:  # every failure is reported with its cause
            failed.append(f"{type(exc).__name__}: {exc}")
        not_up |= {m.node_id for m in healthy.members() if m.status is not MemberStatus.UP}
        peak_mb = max(peak_mb, rss_mb(victim.pid))
        time.sleep(0.05)
    print(f"requests: {ok} ok, {len(failed)} failed, slowest {slowest_s:.3f} s")
    print(f"victim's peak RSS: {peak_mb:.0f} MB")
    return {"ok": ok, "failed": failed, "slowest_s": round(slowest_s, 3)}, peak_mb, not_up
