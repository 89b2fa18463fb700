"""Guaranteed delivery: acknowledgements, failures, expiry, and repaired fan-out.

python examples/guaranteed_delivery.py

The receiving node's link drops 30% of what it receives (injected with
zcluster.testing), so every repair below really happens.
"""

from __future__ import annotations

import threading

from zcluster import DeliveryGuarantee, Node, PublicationLoss, UnknownMember
from zcluster.testing import LinkConditions, inject_inbound_faults

ORDERS = 1000


def main() -> None:
    with Node("shop") as shop:
        billing = Node("billing", seeds=[shop.address])
        inject_inbound_faults(billing, LinkConditions(packet_loss_rate=0.3), seed=1)
        billed: list[int] = []

        def bill(order: int, sender: str) -> None:
            if order < 0:
                raise ValueError(f"order {order} has a negative number")
            billed.append(order)

        billing.register("bill", bill)
        with billing:
            # ORDERED: every order arrives once, in order, despite the lossy link.
            acks = [
                shop.send("billing", "bill", n, guarantee=DeliveryGuarantee.ORDERED)
                for n in range(ORDERS)
            ]
            statuses = {ack.wait(30) for ack in acks if ack is not None}
            print(f"{ORDERS} orders: {sorted(s.value for s in statuses)}")
            print(f"billed in order, once each: {billed == list(range(ORDERS))}")
            print(f"retransmissions: {shop.stats().get('reliable_retransmits', 0)}")
            # A burst leaves in batches: many messages to one receiver in one ZeroMQ message.
            print(f"sent in batches: {shop.stats().get('reliable_batches_sent', 0) > 0}")

            # A handler that raises: the sender learns why.
            failed = shop.send("billing", "bill", -1)
            assert failed is not None
            failed.wait(10)
            print(f"order -1: {failed.status.value} ({failed.reason})")

            # Fan-out with repair: the subscriber fetches what its link dropped.
            received: list[int] = []
            losses: list[PublicationLoss] = []
            done = threading.Event()

            def on_price(topic: str, price: int, sender: str) -> None:
                received.append(price)
                if len(received) == 500:
                    done.set()

            billing.on_publication_loss(losses.append)
            billing.subscribe("prices", on_price)
            shop.wait_for(lambda: "billing" in shop.subscribers("prices"), 10)
            for price in range(500):
                shop.publish("prices", price, guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
            done.wait(30)
            print(f"prices received: {len(set(received))}/500, lost for good: {len(losses)}")

        # billing left the cluster: a guaranteed send to it is refused at once. (To a
        # member that crashed and is down, it would wait, and end EXPIRED after its ttl.)
        try:
            shop.send("billing", "bill", 1, ttl=2.0)
        except UnknownMember as exc:
            print(f"order to a stopped node: refused ({exc})")


if __name__ == "__main__":
    main()
