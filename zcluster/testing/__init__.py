"""Test tools for clusters, for our tests and yours.

- :class:`ClusterTestHarness`: N nodes on real sockets (``backend="zmq"``) or on
  a deterministic simulated network (``backend="sim"``), network conditions,
  crashes, restarts, assertions.
- :class:`NetworkConditions` / :class:`LinkConditions`: latency, jitter, loss,
  duplication, reordering, partitions, one-way cuts.
- :class:`SimNetwork`: the simulated network itself.
- :class:`DeliveryLog`, :class:`CausalLog`, :func:`check_membership_agreement`: invariant checkers
  (lost, duplicated, out-of-order and causally early deliveries; diverging
  views) that name the seed reproducing a failure.
"""

from zcluster.testing.checkers import (
    CausalLog,
    DeliveryLog,
    InvariantViolation,
    check_membership_agreement,
)
from zcluster.testing.faults import LinkConditions, NetworkConditions, inject_inbound_faults
from zcluster.testing.harness import ClusterTestHarness
from zcluster.testing.sim import SimNetwork, SimNode

__all__ = [
    "CausalLog",
    "ClusterTestHarness",
    "DeliveryLog",
    "InvariantViolation",
    "LinkConditions",
    "NetworkConditions",
    "SimNetwork",
    "SimNode",
    "check_membership_agreement",
    "inject_inbound_faults",
]
