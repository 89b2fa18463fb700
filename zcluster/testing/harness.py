"""ClusterTestHarness: a test cluster on real sockets or on the simulated network.

    harness = ClusterTestHarness.create_test_cluster(5, backend="zmq")
    harness.simulate_network_conditions(NetworkConditions(partition_groups=[[0, 1], [2, 3, 4]]))
    ...
    harness.heal()
    assert harness.run_until_satisfied(lambda nodes: harness.verify_cluster_stability(), 10)
    harness.close()

Both backends take the same calls. On ``"zmq"`` each node is a real
:class:`~zcluster.Node` on 127.0.0.1, and conditions are applied where each
node receives a message (its driver's single fault-injection point). On
``"sim"`` each node is a :class:`~zcluster.testing.sim.SimNode` on a virtual
clock; ``run_until_satisfied`` advances virtual time, and one seed
reproduces the whole run (``trace_digest()``).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from zcluster.core import events as ev
from zcluster.errors import ConfigError, RequestTimeout, UnknownMember
from zcluster.protocol.members import MemberStatus
from zcluster.runtime.asyncnode import JoinTimeout
from zcluster.runtime.node import Node
from zcluster.security.config import SecurityMode
from zcluster.testing.credentials import ThrowawayCredentials
from zcluster.testing.faults import PERFECT, FaultModel, NetworkConditions
from zcluster.testing.processes import ProcessNode, free_port_pair
from zcluster.testing.sim import SimNetwork, SimNode

Backend = Literal["zmq", "sim"]
Assertion = Callable[[Sequence[Any]], bool]

#: real-time polling interval of run_until_satisfied on the zmq backend
POLL_INTERVAL_S = 0.02
#: node id of the in-process node that reads the views of node processes
OBSERVER_ID = "harness-observer"
#: run_until_satisfied's timeout when none is given
DEFAULT_TIMEOUT_S = 30.0
#: how long a node on the zmq backend may take to start and join
NODE_START_TIMEOUT_S = 15.0


class ClusterTestHarness:
    """N nodes, a controllable network, assertions, and clean shutdown."""

    def __init__(
        self,
        backend: Backend = "zmq",
        seed: int | None = None,
        *,
        processes: bool = False,
        security: SecurityMode | str = SecurityMode.NONE,
        **node_options: Any,
    ) -> None:
        if backend not in ("zmq", "sim"):
            raise ConfigError(f"backend must be 'zmq' or 'sim', got {backend!r}")
        if processes and (backend != "zmq" or node_options):
            raise ConfigError("processes=True needs backend='zmq' and takes no node options")
        mode = SecurityMode.parse(security)
        if mode is not SecurityMode.NONE and backend != "zmq":
            raise ConfigError("a security mode needs backend='zmq' (the simulator has no sockets)")
        #: throw-away keys and secrets for the nodes, in security mode ``security``
        self.credentials = ThrowawayCredentials(
            mode, Path(tempfile.mkdtemp(prefix="zcluster-harness-"))
        )
        self.processes = processes
        self._observer: Node | None = None
        self.backend: Backend = backend
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.node_options = node_options
        self.conditions = PERFECT
        self.nodes: list[Any] = []
        self._ids: list[str] = []
        self._assertions: list[Assertion] = []
        self._sim: SimNetwork | None = None
        self._rng = random.Random(self.seed)
        self._alive: list[bool] = []
        self._addresses: list[str] = []
        self._index_of: dict[str, int] = {}
        self._base_conditions = PERFECT
        if backend == "sim":
            self._sim = SimNetwork(self.seed, **node_options)
            self._base_conditions = self.conditions = self._sim.conditions

    # ------------------------------------------------------------ construction

    @classmethod
    def create_test_cluster(
        cls,
        node_count: int,
        backend: Backend = "zmq",
        seed: int | None = None,
        *,
        processes: bool = False,
        security: SecurityMode | str = SecurityMode.NONE,
        **node_options: Any,
    ) -> ClusterTestHarness:
        """Start ``node_count`` nodes (``n0`` … ``nN-1``), each joining through a running one.

        ``processes=True`` (zmq backend) runs each node as a separate ``zcluster node``
        OS process, so that ``simulate_node_failure(i, "crash")`` is a real SIGKILL.
        ``security`` (zmq backend) runs the cluster in that mode, with throw-away keys.
        """
        if node_count < 1:
            raise ConfigError("node_count must be at least 1")
        harness = cls(backend, seed, processes=processes, security=security, **node_options)
        try:
            for index in range(node_count):
                harness._start(index, f"n{index}")
        except BaseException:
            harness.close()
            raise
        return harness

    @classmethod
    async def acreate_test_cluster(
        cls,
        node_count: int,
        backend: Backend = "zmq",
        seed: int | None = None,
        *,
        processes: bool = False,
        security: SecurityMode | str = SecurityMode.NONE,
        **node_options: Any,
    ) -> ClusterTestHarness:
        """``create_test_cluster`` for asyncio tests: starts nodes without blocking the loop."""
        return await asyncio.to_thread(
            cls.create_test_cluster,
            node_count,
            backend,
            seed,
            processes=processes,
            security=security,
            **node_options,
        )

    async def arun_until_satisfied(
        self, condition: Callable[[], bool] | float | None = None, timeout: float | None = None
    ) -> bool:
        """``run_until_satisfied`` for asyncio tests; other tasks run while it waits."""
        if self._sim is not None:
            return self.run_until_satisfied(condition, timeout)  # virtual time: no waiting
        return await asyncio.to_thread(self.run_until_satisfied, condition, timeout)

    async def asimulate_node_failure(
        self, index: int, mode: Literal["crash", "stop"] = "crash"
    ) -> None:
        await asyncio.to_thread(self.simulate_node_failure, index, mode)

    async def arestart_node(self, index: int) -> None:
        await asyncio.to_thread(self.restart_node, index)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> ClusterTestHarness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __enter__(self) -> ClusterTestHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seeds_for(self, index: int) -> list[str]:
        others = [i for i in range(len(self.nodes)) if i != index and self._alive[i]]
        return [self._address(others[0])] if others else []

    def _seed_ids(self, seeds: list[str]) -> dict[str, str]:
        """Each seed address with the node id there (whose key a secured node needs)."""
        return {address: self._ids[self._addresses.index(address)] for address in seeds}

    def _address(self, index: int) -> str:
        return self._addresses[index]

    def _start(
        self, index: int, node_id: str, bind: str | None = None, *, wait: bool = True
    ) -> None:
        seeds = self._seeds_for(index)
        self._index_of[node_id] = index
        if index < len(self.nodes) and self.processes:
            self.nodes[index].cleanup()  # the previous process's log
        if self._sim is not None:
            node: Any = self._sim.add_node(node_id, seeds=seeds)
            joined = not wait or self._sim.run_until(
                lambda: node.core.me.status is MemberStatus.UP, NODE_START_TIMEOUT_S
            )
            if not joined:
                raise JoinTimeout(f"simulated node {node_id} did not join")
        else:
            # A fixed pair of ports, so that a restart gets back both ROUTER and PUB.
            bind = bind or f"127.0.0.1:{free_port_pair()}"
            node = self._start_process(node_id, bind, seeds) if self.processes else None
            if node is None:
                security = self.credentials.config(node_id, self._seed_ids(seeds))
                node = Node(node_id, bind=bind, seeds=seeds, security=security, **self.node_options)
                node.inbound_faults = self._fault_hook(index)  # from the first message
                node.start(wait=wait, timeout=NODE_START_TIMEOUT_S)
        address = str(node.core.address if self._sim is not None else node.address)
        if index < len(self.nodes):
            self.nodes[index] = node
            self._alive[index] = True
        else:
            self.nodes.append(node)
            self._ids.append(node_id)
            self._alive.append(True)
            self._addresses.append(address)

    def _start_process(self, node_id: str, bind: str, seeds: list[str]) -> ProcessNode:
        flags = self.credentials.flags(node_id, self._seed_ids(seeds))
        node = ProcessNode(node_id, bind, seeds, self._observer, flags)
        if self._observer is None:
            try:
                security = self.credentials.config(OBSERVER_ID, {bind: node_id})
                self._observer = Node(OBSERVER_ID, seeds=[bind], security=security)
                self._observer.start(timeout=NODE_START_TIMEOUT_S)
            except BaseException:
                self._observer = None
                node.cleanup()
                raise
            node._observer = self._observer
        return node

    def _fault_hook(self, index: int) -> Callable[[ev.EnvelopeReceived], tuple[float, ...]]:
        faults = FaultModel(random.Random(self._rng.getrandbits(64)), self.conditions)
        index_of = self._index_of  # shared: nodes started later are found too

        def fate(event: ev.EnvelopeReceived) -> tuple[float, ...]:
            source = index_of.get(event.envelope.sender)
            if source is None:
                return (0.0,)  # not one of ours: pass it through
            faults.conditions = self.conditions
            return faults.fate(source, index)

        return fate

    # ------------------------------------------------------------ faults

    def simulate_network_conditions(self, conditions: NetworkConditions) -> None:
        """Apply ``conditions`` to the whole network from now on (replaces earlier ones)."""
        if self.processes:
            raise ConfigError("network conditions need in-process nodes (processes=False)")
        self.conditions = conditions
        if self._sim is not None:
            self._sim.set_conditions(conditions)

    def heal(self) -> None:
        """Back to the network as it was created (perfect, unless sim options said otherwise)."""
        self.simulate_network_conditions(self._base_conditions)

    def simulate_node_failure(self, index: int, mode: Literal["crash", "stop"] = "crash") -> None:
        """Crash node ``index`` (no goodbye; peers must detect it) or stop it gracefully."""
        if mode not in ("crash", "stop"):
            raise ConfigError(f"mode must be 'crash' or 'stop', got {mode!r}")
        if not self._alive[index]:
            return
        self._alive[index] = False
        node = self.nodes[index]
        if self._sim is not None:
            (self._sim.crash if mode == "crash" else self._sim.stop)(node.node_id)
        elif mode == "crash":
            node.kill() if self.processes else node.abort()
        else:
            node.stop()

    def restart_node(self, index: int) -> None:
        """Start node ``index`` again: same id and addresses, a new incarnation.

        It returns once the node runs, not once it has joined (it may be cut off by a
        partition): wait for what the test expects with run_until_satisfied.
        """
        if self._alive[index]:
            raise ConfigError(f"node {index} is running; fail it first")
        self._start(index, self._ids[index], bind=self._address(index), wait=False)

    # ------------------------------------------------------------ checks

    @property
    def live_nodes(self) -> list[Any]:
        return [n for n, alive in zip(self.nodes, self._alive, strict=True) if alive]

    def add_assertion(self, assertion: Assertion) -> None:
        """Add ``assertion(live_nodes) -> bool``; run_until_satisfied waits for all of them."""
        self._assertions.append(assertion)

    def run_until_satisfied(
        self, condition: Callable[[], bool] | float | None = None, timeout: float | None = None
    ) -> bool:
        """Run until satisfied (True) or until ``timeout`` seconds pass (False).

        ``run_until_satisfied(lambda: ..., timeout=10)`` waits for that condition;
        ``run_until_satisfied(10)`` waits until every ``add_assertion`` holds. On
        the sim backend the timeout is virtual time, advanced as fast as possible.
        """
        if condition is None or isinstance(condition, int | float):
            limit = float(condition) if condition is not None else timeout
            assertions = list(self._assertions)
            check: Callable[[], bool] = lambda: all(a(self.live_nodes) for a in assertions)  # noqa: E731
        else:
            limit, check = timeout, condition
        limit = DEFAULT_TIMEOUT_S if limit is None else limit
        if self._sim is not None:
            return self._sim.run_until(check, limit)
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_INTERVAL_S)
        return True

    def verify_cluster_stability(self) -> bool:
        """All live nodes share one view: equal digests, and each sees every live node up."""
        live = self.live_nodes
        if not live:
            return True
        ids = {n.node_id for n in live}
        try:
            for node in live:
                up = {m.node_id for m in node.members() if m.status is MemberStatus.UP}
                if not ids <= up:
                    return False
            return len({n.view_digest() for n in live}) == 1
        except (RequestTimeout, UnknownMember):
            # A node process is asked over the network: one that has not answered
            # yet, or that the observer has not met yet, is not yet seen stable.
            return False

    def trace_digest(self) -> str:
        """Hash of everything observable in a simulated run (sim backend only)."""
        if self._sim is None:
            raise ConfigError("trace_digest needs the sim backend")
        return self._sim.trace_digest()

    @property
    def sim(self) -> SimNetwork:
        if self._sim is None:
            raise ConfigError("this harness runs on real sockets, not the simulator")
        return self._sim

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop every node this harness started (also after a failed test)."""
        errors: list[BaseException] = []
        for index, node in enumerate(self.nodes):
            try:
                if self.processes:
                    node.cleanup()  # also for failed nodes: their logs
                elif self._sim is None and self._alive[index]:
                    node.abort()
            except BaseException as exc:  # keep closing the others
                errors.append(exc)
            self._alive[index] = False
        if self._observer is not None:
            self._observer.abort()
            self._observer = None
        shutil.rmtree(self.credentials.directory, ignore_errors=True)
        if errors:
            raise errors[0]


__all__ = ["ClusterTestHarness", "NetworkConditions", "SimNode"]
