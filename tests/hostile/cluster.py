"""A cluster to attack: a healthy member in this process (the observer), and a victim
and a third member as ``zcluster node`` processes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import wait_until
from zcluster import Member, MemberStatus, Node
from zcluster.testing.processes import ProcessNode, free_port_pair


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@contextmanager
def victim_cluster(
    monkeypatch: pytest.MonkeyPatch, victim_env: Mapping[str, str] | None = None
) -> Iterator[tuple[Node, ProcessNode, ProcessNode]]:
    """(healthy, victim, third), all UP; ``victim_env`` sets the victim's settings."""
    healthy = Node("healthy", bind="127.0.0.1:0")
    healthy.start()
    processes: list[ProcessNode] = []
    try:
        with monkeypatch.context() as env:
            for name, value in (victim_env or {}).items():
                env.setenv(name, value)
            victim = ProcessNode(
                "victim", f"127.0.0.1:{free_port_pair()}", [healthy.address], healthy
            )
            processes.append(victim)
        third = ProcessNode("third", f"127.0.0.1:{free_port_pair()}", [healthy.address], healthy)
        processes.append(third)
        everyone = {"healthy", "victim", "third"}
        views = (healthy.members, victim.members, third.members)
        # every view, not only the observer's
        assert wait_until(lambda: all(up_in(view()) == everyone for view in views), 10)
        yield healthy, victim, third
    finally:
        for process in processes:
            process.cleanup()
        healthy.stop()


def up_in(members: Iterable[Member]) -> set[str]:
    """The ids of the members UP in a view."""
    return {m.node_id for m in members if m.status is MemberStatus.UP}
