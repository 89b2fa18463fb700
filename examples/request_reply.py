"""Request/reply between two nodes: a service registers a handler, a client calls it.

python examples/request_reply.py
"""

from __future__ import annotations

from zcluster import Node, RemoteError


def main() -> None:
    with Node("inventory") as service:
        stock = {"apple": 3, "pear": 0}

        def lookup(item: str, sender: str) -> dict[str, object]:
            if item not in stock:
                raise KeyError(item)
            return {"item": item, "count": stock[item], "asked_by": sender}

        service.register("stock", lookup)

        with Node("shop", seeds=[service.address]) as client:
            print(client.request("inventory", "stock", "apple", timeout=2.0))
            print(client.request("inventory", "stock", "pear", timeout=2.0))
            try:
                client.request("inventory", "stock", "plum", timeout=2.0)
            except RemoteError as exc:
                print(f"error from inventory: {exc}")


if __name__ == "__main__":
    main()
