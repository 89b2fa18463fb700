"""send_transaction and validation hooks on real nodes (blocking and asyncio APIs):
results, vetoes, bad arguments, and a coordinator that stops first."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tests.helpers import wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import AsyncNode, ConfigError, Node, TransactionResult


def test_committed_at_every_target_or_vetoed_at_none(trio: list[Node]) -> None:
    a, b, c = trio
    got: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def take(me: str) -> object:
        def handler(order: str, sender: str) -> None:
            with lock:
                got.append((me, order, sender))

        return handler

    def in_stock(order: str, sender: str) -> None:
        if order == "plums":
            raise LookupError("no plums left")

    b.register("book", take("b"), validate=in_stock)
    c.register("book", take("c"))
    result = a.send_transaction(["b", "c"], "book", "apples", timeout=5)
    assert result == TransactionResult(True) and result and result.status == "committed"
    assert wait_until(lambda: len(got) == 2, 5)
    assert sorted(got) == [("b", "apples", "a"), ("c", "apples", "a")]
    vetoed = a.send_transaction(["b", "c"], "book", "plums", timeout=5)
    assert not vetoed and vetoed.status == "aborted"
    assert vetoed.vetoes == {"b": "LookupError: no plums left"}
    assert a.stats()["transactions_aborted"] == 1 and b.stats()["transactions_vetoed"] == 1
    assert not wait_until(lambda: len(got) > 2, 0.5), got


def test_bad_arguments_are_refused_at_once(trio: list[Node]) -> None:
    a, b, _ = trio
    b.register("book", lambda order, sender: None)
    with pytest.raises(ConfigError, match="list of node ids"):
        a.send_transaction("b", "book", 1)
    with pytest.raises(ConfigError, match="timeout"):
        a.send_transaction(["b"], "book", 1, timeout=0)
    with pytest.raises(ConfigError, match="handler name"):
        a.send_transaction(["b"], "bad name", 1)
    refused = a.send_transaction(["b", "nobody"], "book", 1)
    assert not refused and "'nobody' is not a member" in refused.reason

    async def hook(order: int, sender: str) -> None:
        return None

    with pytest.raises(ConfigError):
        b.register("other", lambda order, sender: None, validate=hook)  # type: ignore[arg-type]


def test_the_asyncio_api_and_a_hook_that_times_out(make_node: NodeFactory) -> None:
    slow = threading.Event()
    target = make_node("t")
    target.register("book", lambda order, sender: None, validate=lambda o, s: slow.wait(3))

    async def main() -> TransactionResult:
        async with AsyncNode("coord", seeds=[target.address]) as node:
            await node.wait_joined(5)
            return await node.send_transaction(["t"], "book", {"n": 1}, timeout=0.5)

    result = asyncio.run(main())
    slow.set()
    assert not result and result.unanswered == ("t",)
    assert "no vote within the timeout from t" in result.reason
