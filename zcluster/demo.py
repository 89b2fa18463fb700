"""``zcluster demo``: a local cluster doing real fan-out, in one command.

The demo process runs the publisher node; each subscriber is a separate
OS process (``zcluster demo-subscriber``) that joins through it, so the
stream crosses real sockets between processes.

With ``--security MODE`` the cluster runs in that security mode, with keys and
secrets made for the run in a temporary directory, removed at the end
(``zcluster.testing.credentials``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from zcluster.protocol.members import MemberStatus
from zcluster.runtime.asyncnode import AsyncNode
from zcluster.security.config import SecurityConfig, SecurityMode
from zcluster.testing.credentials import ThrowawayCredentials

TOPIC = "demo.stream"
#: how long subscriber processes get to start and join
DEMO_JOIN_TIMEOUT_S = 30.0
#: how long the stream may take to arrive everywhere after publishing ends
DEMO_DELIVERY_TIMEOUT_S = 60.0
PUBLISHER = "demo-publisher"


def run_demo(subscribers: int, messages: int, security: str = "none") -> int:
    with tempfile.TemporaryDirectory(prefix="zcluster-demo-") as scratch:
        credentials = ThrowawayCredentials(security, Path(scratch))
        return asyncio.run(_demo(subscribers, messages, credentials))


def _say(text: str) -> None:
    print(text, flush=True)


async def _demo(subscribers: int, messages: int, security: ThrowawayCredentials) -> int:
    _say(f"zcluster demo: 1 publisher + {subscribers} subscriber processes on 127.0.0.1")
    names = [f"demo-subscriber-{i}" for i in range(1, subscribers + 1)]
    if security.mode is not SecurityMode.NONE:
        _say(f"  {security.describe()}")
    publisher = AsyncNode(PUBLISHER, security=security.config(PUBLISHER))
    await publisher.start()
    _say(f"  publisher {publisher.node_id} formed the cluster at {publisher.address}")
    processes = [
        await _spawn(
            name, publisher.address, messages, security.flags(name, {publisher.address: PUBLISHER})
        )
        for name in names
    ]
    try:

        def everyone_ready() -> bool:
            up = {m.node_id for m in publisher.members() if m.status is MemberStatus.UP}
            return set(names) <= publisher.subscribers(TOPIC) and set(names) <= up

        ready = await publisher.wait_for(everyone_ready, DEMO_JOIN_TIMEOUT_S)
        if not ready:
            _say("demo failed: subscribers did not join in time")
            return 1
        for name in names:  # in a stable order, whatever order they came up in
            member = publisher.member(name)
            assert member is not None
            _say(f"  member {name} is up at {member.address}")
        view = ", ".join(f"{m.node_id}={m.status}" for m in publisher.members())
        _say(f"  cluster view ({publisher.view_digest()}): {view}")
        _say(f"publishing {messages} messages on {TOPIC!r} ...")
        for seq in range(messages):
            await publisher.publish(TOPIC, {"seq": seq, "text": f"message {seq}"})
            if seq % 1000 == 999:
                await asyncio.sleep(0)  # let the loop serve heartbeats during long streams
        results = await asyncio.wait_for(
            asyncio.gather(*(_result(p) for p in processes)), DEMO_DELIVERY_TIMEOUT_S
        )
    except TimeoutError:
        _say("demo failed: subscribers did not report in time")
        return 1
    finally:
        await publisher.stop()  # first: its subscribers confirm they hold every message
        await _reap(processes)
    return _report(results, messages)


def _report(results: list[dict[str, Any]], messages: int) -> int:
    _say("what each subscriber received:")
    complete = True
    for result in results:
        got = result.get("received", 0)
        in_order = result.get("in_order", False)
        complete &= got == messages and in_order
        order = "in order" if in_order else "OUT OF ORDER"
        _say(
            f"  {result.get('id')}: {got}/{messages} messages, {order}, "
            f"first seq {result.get('first')}, last seq {result.get('last')}"
        )
    _say(
        "demo complete: every subscriber got every message"
        if complete
        else "demo: messages missing"
    )
    return 0 if complete else 1


async def _spawn(
    name: str, seed: str, messages: int, security: list[str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zcluster",
        "demo-subscriber",
        "--id",
        name,
        "--seed",
        seed,
        "--topic",
        TOPIC,
        "--count",
        str(messages),
        *security,
        stdout=asyncio.subprocess.PIPE,
    )


async def _result(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    async for line in process.stdout:
        record = json.loads(line)
        if record.get("event") == "result":
            return dict(record)
    return {"id": f"pid {process.pid}", "received": 0, "in_order": False}


async def _reap(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def run_subscriber(
    node_id: str,
    seeds: tuple[str, ...],
    topic: str,
    count: int,
    timeout: float,
    security: SecurityConfig | None = None,
) -> None:
    node = AsyncNode(node_id, seeds=seeds, security=security)
    seqs: list[int] = []
    done = asyncio.Event()

    def receive(_topic: str, message: Any, _sender: str) -> None:
        seqs.append(message["seq"])
        if len(seqs) >= count:
            done.set()

    await node.subscribe(topic, receive)
    await node.start()
    print(json.dumps({"event": "ready", "id": node_id}), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    result = {
        "event": "result",
        "id": node_id,
        "received": len(seqs),
        "in_order": seqs == sorted(set(seqs)),
        "first": seqs[0] if seqs else None,
        "last": seqs[-1] if seqs else None,
    }
    print(json.dumps(result), flush=True)
    await node.stop()
