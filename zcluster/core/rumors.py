"""Records waiting to be piggybacked, each a bounded number of times, least sent first.

Taking costs O(limit) plus a sort of the distinct counts of sends remaining (at
most the retransmit count), whatever the length of the queue: a node that has
just learned a thousand records (a join storm, a healed partition) must not pay
for all of them on every message it sends.
"""

from __future__ import annotations


class Rumors:
    """Node ids whose current record is still to be sent, with how many sends remain."""

    def __init__(self) -> None:
        self._left: dict[str, int] = {}
        #: node ids by sends remaining, each bucket in the order they got there
        self._buckets: dict[int, dict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._left)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._left

    def put(self, node_id: str, sends: int) -> None:
        """Send ``node_id``'s record ``sends`` more times (whatever was queued before)."""
        self.discard(node_id)
        if sends > 0:
            self._left[node_id] = sends
            self._buckets.setdefault(sends, {})[node_id] = None

    def discard(self, node_id: str) -> None:
        left = self._left.pop(node_id, None)
        if left is not None:
            bucket = self._buckets[left]
            del bucket[node_id]
            if not bucket:
                del self._buckets[left]

    def take(self, limit: int) -> list[str]:
        """Up to ``limit`` node ids, most sends remaining first; each counts one send."""
        chosen: list[str] = []
        if limit <= 0:
            return chosen
        for left in sorted(self._buckets, reverse=True):  # a handful of distinct counts
            for node_id in self._buckets[left]:
                chosen.append(node_id)
                if len(chosen) == limit:
                    break
            if len(chosen) == limit:
                break
        for node_id in chosen:
            self.put(node_id, self._left[node_id] - 1)
        return chosen
