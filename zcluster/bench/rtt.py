"""zcluster request/reply: sequential requests to a handler in another process that echoes them.

The blocking pair is ``Node.request`` -> a ``Node`` handler (run on the
responder's callback thread); the asyncio pair is ``await
AsyncNode.request`` -> a plain-function ``AsyncNode`` handler (run on the
responder's event loop). The message is encoded and decoded both ways.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from zcluster import AsyncNode, Node
from zcluster.bench import workload
from zcluster.bench.processes import READY_TIMEOUT_S, RUN_TIMEOUT_S, Link, Workers
from zcluster.bench.raw import ROUND_TRIP_TIMEOUT_S
from zcluster.bench.samples import BenchError, Sample, latency_samples
from zcluster.bench.steps import is_up

RESPONDER_ID = "bench-echo"
REQUESTER_ID = "bench-client"
HANDLER = "echo"


def echo(message: Any, _sender: str) -> Any:
    return message


def _responder(link: Link) -> None:
    node = Node(RESPONDER_ID)
    node.register(HANDLER, echo)
    with node:
        link.report("ready", address=node.address)
        link.wait_over(RUN_TIMEOUT_S)


def _requester(link: Link, seed: str, count: int, warmup: int) -> None:
    with Node(REQUESTER_ID, seeds=[seed]) as node:
        if not node.wait_for(lambda: is_up(node, RESPONDER_ID), READY_TIMEOUT_S):
            raise BenchError(f"{RESPONDER_ID} not up within {READY_TIMEOUT_S:g} s")
        request, make, pc = node.request, workload.make_message, time.perf_counter_ns
        payload = workload.body()
        samples_ns = [0] * count
        for seq in range(-warmup, count):
            started_ns = pc()
            request(RESPONDER_ID, HANDLER, make(seq, payload), ROUND_TRIP_TIMEOUT_S)
            if seq >= 0:
                samples_ns[seq] = pc() - started_ns
        link.report("round_trips", samples_ns=samples_ns)


async def _responder_async(link: Link) -> None:
    node = AsyncNode(RESPONDER_ID)
    node.register(HANDLER, echo)
    async with node:
        link.report("ready", address=node.address)
        await asyncio.to_thread(link.wait_over, RUN_TIMEOUT_S)


async def _requester_async(link: Link, seed: str, count: int, warmup: int) -> None:
    async with AsyncNode(REQUESTER_ID, seeds=[seed]) as node:
        if not await node.wait_for(lambda: is_up(node, RESPONDER_ID), READY_TIMEOUT_S):
            raise BenchError(f"{RESPONDER_ID} not up within {READY_TIMEOUT_S:g} s")
        request, make, pc = node.request, workload.make_message, time.perf_counter_ns
        payload = workload.body()
        samples_ns = [0] * count
        for seq in range(-warmup, count):
            started_ns = pc()
            await request(RESPONDER_ID, HANDLER, make(seq, payload), ROUND_TRIP_TIMEOUT_S)
            if seq >= 0:
                samples_ns[seq] = pc() - started_ns
        link.report("round_trips", samples_ns=samples_ns)


def _responder_in_asyncio(link: Link) -> None:
    asyncio.run(_responder_async(link))


def _requester_in_asyncio(link: Link, seed: str, count: int, warmup: int) -> None:
    asyncio.run(_requester_async(link, seed, count, warmup))


def round_trips(count: int, warmup: int, *, use_asyncio: bool) -> dict[str, Sample]:
    """Sequential requests to a responder process after a warm-up: p50, p99."""
    server, client = (
        (_responder_in_asyncio, _requester_in_asyncio) if use_asyncio else (_responder, _requester)
    )
    with Workers(f"zcluster {'AsyncNode' if use_asyncio else 'Node'}.request") as workers:
        workers.start(server, "responder")
        seed = workers.expect("ready", READY_TIMEOUT_S, "responder")["address"]
        workers.start(client, "requester", seed, count, warmup)
        timeout_s = READY_TIMEOUT_S + RUN_TIMEOUT_S
        samples_ns = workers.expect("round_trips", timeout_s, "requester")["samples_ns"]
    return latency_samples(samples_ns)
