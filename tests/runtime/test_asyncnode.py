"""The asyncio API on real sockets: coroutine handlers and callbacks, async with."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import all_up as views_all_up
from zcluster import AsyncNode, JoinTimeout, MemberStatus, RemoteError, RequestTimeout


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def all_up(nodes: list[AsyncNode], timeout: float = 5) -> bool:
    return await nodes[0].wait_for(lambda: views_all_up(nodes), timeout)


def test_async_cluster_request_publish_and_leave() -> None:
    async def scenario() -> None:
        async with AsyncNode("a") as a:
            async with AsyncNode("b", seeds=[a.address]) as b:
                assert await all_up([a, b])

                async def double(message: int, sender: str) -> int:
                    await asyncio.sleep(0)
                    return message * 2

                a.register("double", double)
                a.register("sync", lambda message, sender: f"{sender}:{message}")
                assert await b.request("a", "double", 21) == 42
                assert await b.request("a", "sync", "x") == "b:x"

                received: list[tuple[str, Any, str]] = []
                done = asyncio.Event()

                async def on_news(topic: str, message: Any, sender: str) -> None:
                    received.append((topic, message, sender))
                    if len(received) == 100:
                        done.set()

                await b.subscribe("news", on_news)
                assert await a.wait_for(lambda: "b" in a.subscribers("news"), 5)
                for i in range(100):
                    await a.publish("news", {"i": i})
                await asyncio.wait_for(done.wait(), 10)
                assert [m["i"] for _, m, _ in received] == list(range(100))
                assert {s for _, _, s in received} == {"a"}
            assert await a.wait_for(
                lambda: a.member("b") is not None and a.member("b").status is MemberStatus.LEFT,  # type: ignore[union-attr]
                3,
            )

    run(scenario())


def test_async_request_failures() -> None:
    async def scenario() -> None:
        async with AsyncNode("a") as a, AsyncNode("b", seeds=[a.address]) as b:
            assert await all_up([a, b])

            async def boom(message: Any, sender: str) -> None:
                raise KeyError("missing key")

            async def hang(message: Any, sender: str) -> None:
                await asyncio.Event().wait()

            a.register("boom", boom)
            a.register("hang", hang)
            with pytest.raises(RemoteError, match="KeyError"):
                await b.request("a", "boom", None)
            with pytest.raises(RequestTimeout):
                await b.request("a", "hang", None, timeout=0.2)

    run(scenario())


def test_join_timeout_when_no_seed_answers() -> None:
    async def scenario() -> None:
        node = AsyncNode("lonely", seeds=["127.0.0.1:9"])  # nothing listens on the discard port
        with pytest.raises(JoinTimeout, match=r"127\.0\.0\.1:9"):
            await node.start(timeout=0.5)
        assert not node.running

    run(scenario())


def test_a_tight_publish_loop_still_lets_the_node_breathe() -> None:
    async def scenario() -> None:
        async with AsyncNode("a") as a:
            turns = 0

            async def ticker() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await asyncio.sleep(0)

            task = asyncio.ensure_future(ticker())
            await asyncio.sleep(0)
            start = turns
            for i in range(5000):
                await a.publish("nobody-listens", i)
            task.cancel()
            # Heartbeats, probes and socket reads ran in between: the loop got control back.
            assert turns - start >= 5000 // 64 - 1

    run(scenario())
