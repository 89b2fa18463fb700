"""A quiet cluster of node processes must never suspect anyone (run with -m slow)."""

from __future__ import annotations

import os
import time

import pytest

from zcluster.testing.processes import free_port_pair

QUIET_SOAK_S = float(os.environ.get("ZCLUSTER_QUIET_SOAK_S", "600"))


@pytest.mark.slow
@pytest.mark.timeout(QUIET_SOAK_S + 120)
def test_no_false_suspicions_in_a_quiet_cluster(spawn) -> None:  # type: ignore[no-untyped-def]
    ports = [free_port_pair() for _ in range(3)]
    seed = f"127.0.0.1:{ports[0]}"
    nodes = [spawn("n1", "--id", "n1", "--bind", seed)]
    assert nodes[0].wait_log("listening on", 10)
    for i, port in enumerate(ports[1:], start=2):
        nodes.append(spawn(f"n{i}", "--id", f"n{i}", "--bind", f"127.0.0.1:{port}", "--seed", seed))
    for node in nodes:
        assert node.wait_log("view: 3 up of 3", 10)
    deadline = time.monotonic() + QUIET_SOAK_S
    while time.monotonic() < deadline:
        for node in nodes:
            log = node.log()
            assert "-> suspect" not in log and "-> down" not in log, log
            assert node.proc.poll() is None
        time.sleep(1)  # sampling interval of a fixed-length soak, not a wait for a condition
