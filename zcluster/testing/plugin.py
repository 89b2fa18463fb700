"""pytest plugin (registered as the ``zcluster`` entry point): cluster fixtures.

    def test_partition_heals(zcluster_harness):
        harness = zcluster_harness(5, backend="sim")
        ...

Every harness a test creates is closed when the test ends, pass or fail. When
a test fails, the report says the seed of each harness it used; run it again
with ``pytest --zcluster-seed=N`` to reproduce a simulated run exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zcluster.testing.harness import Backend, ClusterTestHarness

HarnessFactory = Callable[..., ClusterTestHarness]
_SEEDS = pytest.StashKey[list[int]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--zcluster-seed",
        type=int,
        default=None,
        help="seed for every zcluster_harness (reproduces a simulated run)",
    )


@pytest.fixture
def zcluster_harness(request: pytest.FixtureRequest) -> Iterator[HarnessFactory]:
    """Make test clusters, closed when the test ends.

    ``zcluster_harness(node_count, backend="sim" | "zmq", seed=None, **node_options)``
    """
    made: list[ClusterTestHarness] = []
    forced = request.config.getoption("--zcluster-seed")
    request.node.stash[_SEEDS] = []

    def make(
        node_count: int, backend: Backend = "sim", seed: int | None = None, **node_options: Any
    ) -> ClusterTestHarness:
        chosen = forced if forced is not None else seed
        if chosen is None:
            chosen = random.SystemRandom().randrange(2**32)
        request.node.stash[_SEEDS].append(chosen)  # reported even if starting fails
        harness = ClusterTestHarness.create_test_cluster(
            node_count, backend=backend, seed=chosen, **node_options
        )
        made.append(harness)
        return harness

    yield make
    errors: list[BaseException] = []
    for harness in made:
        try:
            harness.close()
        except BaseException as exc:  # close the others all the same
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    seeds = item.stash.get(_SEEDS, [])
    if seeds and report.failed:
        shown = ", ".join(str(s) for s in seeds)
        report.sections.append(
            ("zcluster", f"harness seed(s): {shown}; reproduce with --zcluster-seed={seeds[0]}")
        )
    return report
