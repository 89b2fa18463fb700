"""CAUSAL delivery: a reply is never read before the post it answers.

python examples/causal_forum.py

An author posts on a forum topic; a moderator answers each post as it reads it. A
reader follows the topic over a link that delays and reorders what it receives
(injected with zcluster.testing), so replies often reach it before their posts. With
CAUSAL, the reader is still given every post before its reply; with AT_LEAST_ONCE,
the same run shows replies first.
"""

from __future__ import annotations

import threading

from zcluster import DeliveryGuarantee, Node
from zcluster.testing import LinkConditions, inject_inbound_faults

POSTS = 200
DISORDER = LinkConditions(latency=0.001, jitter=0.02, reorder_rate=0.5, reorder_delay=0.05)


def run(guarantee: DeliveryGuarantee) -> tuple[int, int]:
    """Returns (replies read before their post, replies that waited for their post)."""
    with Node("author") as author:
        moderator = Node("moderator", seeds=[author.address])
        reader = Node("reader", seeds=[author.address])
        inject_inbound_faults(reader, DISORDER, seed=7)
        read: list[str] = []
        done = threading.Event()

        def answer(topic: str, post: str, sender: str) -> None:
            if sender == "author":
                moderator.publish("forum", f"re: {post}", guarantee=guarantee)

        def follow(topic: str, text: str, sender: str) -> None:
            read.append(text)
            if len(read) == 2 * POSTS:
                done.set()

        moderator.subscribe("forum", answer)
        reader.subscribe("forum", follow)
        with moderator, reader:
            ready = lambda: {"moderator", "reader"} <= author.subscribers("forum")  # noqa: E731
            author.wait_for(ready, 10)
            moderator.wait_for(lambda: "reader" in moderator.subscribers("forum"), 10)
            for i in range(POSTS):
                author.publish("forum", f"post {i}", guarantee=guarantee)
            done.wait(30)
            seen: set[str] = set()
            early = 0
            for text in read:
                if text.startswith("re: ") and text[4:] not in seen:
                    early += 1
                seen.add(text)
            waited = reader.stats().get("causal_held", 0)
    return early, waited


def main() -> None:
    early, waited = run(DeliveryGuarantee.CAUSAL)
    print(f"CAUSAL: replies read before their post: {early}")
    print(f"CAUSAL: replies that arrived first and waited for their post: {waited > 0}")
    early, _ = run(DeliveryGuarantee.AT_LEAST_ONCE)
    print(f"AT_LEAST_ONCE: replies read before their post: {early > 0}")


if __name__ == "__main__":
    main()
