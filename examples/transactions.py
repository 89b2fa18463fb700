"""TRANSACTIONAL delivery: an order is booked by every service, or by none.

python examples/transactions.py

A shop books each order with three services in one transaction. The warehouse's
validation hook vetoes an order it has no stock for: then neither billing nor shipping
sees it. A service that does not answer in time aborts the transaction too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from zcluster import Node

STOCK = {"apples": 10, "pears": 0}


def main() -> None:
    with Node("shop") as shop:
        names = ("warehouse", "billing", "shipping")
        services = [Node(name, seeds=[shop.address]) for name in names]
        booked: dict[str, list[str]] = {name: [] for name in names}
        lock = threading.Lock()

        def book(me: str) -> Callable[[dict[str, str], str], None]:
            def handler(order: dict[str, str], sender: str) -> None:
                with lock:
                    booked[me].append(order["item"])

            return handler

        def in_stock(order: dict[str, str], sender: str) -> None:
            if STOCK.get(order["item"], 0) <= 0:
                raise LookupError(f"no {order['item']} in stock")

        warehouse, billing, shipping = services
        warehouse.register("book", book("warehouse"), validate=in_stock)
        billing.register("book", book("billing"))
        shipping.register("book", book("shipping"))
        for service in services:
            service.start()
        shop.wait_for(lambda: all(shop.member(s.node_id) is not None for s in services), 10)
        targets = [s.node_id for s in services]

        result = shop.send_transaction(targets, "book", {"item": "apples"}, timeout=5)
        print(f"apples: {result.status}")
        result = shop.send_transaction(targets, "book", {"item": "pears"}, timeout=5)
        print(f"pears: {result.status} ({result.reason})")

        shipping.stop()  # gone: a transaction that names it cannot commit
        result = shop.send_transaction(targets, "book", {"item": "apples"}, timeout=2)
        print(f"apples without shipping: {result.status} ({result.reason})")
        for service in services:
            service.stop()
        print(f"booked: {booked}")


if __name__ == "__main__":
    main()
