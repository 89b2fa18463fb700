"""The ``spawn`` fixture: zcluster node processes, killed and reaped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.commands import NodeProcess
from zcluster.testing.processes import free_port_pair


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """Start node processes; every one is killed and reaped at teardown, pass or fail."""
    started: list[NodeProcess] = []

    def make(name: str, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
        proc = NodeProcess(list(args), tmp_path / f"{name}-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture
def seed(spawn) -> str:  # type: ignore[no-untyped-def]
    """The address of a running ``zcluster node --id n1`` to join through."""
    address = f"127.0.0.1:{free_port_pair()}"
    node = spawn("n1", "--id", "n1", "--bind", address)
    assert node.wait_log("listening on", 10), node.log()
    return address
