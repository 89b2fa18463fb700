"""Sets of sequence numbers and a hold-back buffer, the bookkeeping of every stream.

A stream numbers its messages 1, 2, 3, ... A receiver remembers which
numbers it has by a contiguous prefix (``upto``) plus the few above it, so
the memory is the size of the current gap, not of the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class SeqSet:
    """Sequence numbers present: every number up to ``upto``, plus ``above``."""

    __slots__ = ("above", "upto")

    def __init__(self, upto: int = 0) -> None:
        self.upto = upto
        self.above: set[int] = set()

    def __contains__(self, seq: int) -> bool:
        return seq <= self.upto or seq in self.above

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was already present."""
        if seq <= self.upto or seq in self.above:
            return False
        if seq == self.upto + 1:
            self.upto = seq
            above = self.above
            while self.upto + 1 in above:
                self.upto += 1
                above.discard(self.upto)
        else:
            self.above.add(seq)
        return True

    def advance_to(self, seq: int) -> None:
        """Count every number up to ``seq`` as present."""
        if seq <= self.upto:
            return
        above = {s for s in self.above if s > seq}
        while seq + 1 in above:  # absorb what now follows contiguously
            seq += 1
            above.discard(seq)
        self.upto, self.above = seq, above

    def add_range(self, first: int, last: int) -> None:
        """Add every number in ``[first, last]``."""
        if first <= self.upto + 1:
            self.advance_to(last)
            return
        for seq in range(first, last + 1):
            self.add(seq)

    @property
    def highest(self) -> int:
        return max(self.above) if self.above else self.upto

    def gaps(
        self, through: int, max_count: int, also_present: Iterable[int] = ()
    ) -> list[tuple[int, int]]:
        """Missing ranges ``(first, last)`` in ``(upto, through]``, at most ``max_count`` numbers.

        ``also_present`` are numbers to treat as present (e.g. held back ones); like
        ``above``, only those in ``(upto, through]`` bound a gap. Every range returned
        has ``first <= last``; none with a budget of 0.
        """
        out: list[tuple[int, int]] = []
        budget = max_count
        start = self.upto + 1
        if budget <= 0 or start > through:
            return out
        present = sorted(
            {s for s in self.above if s <= through}
            | {s for s in also_present if start <= s <= through}
        )
        for seq in present:
            if seq > start:
                last = min(seq - 1, start + budget - 1)
                out.append((start, last))
                budget -= last - start + 1
                if budget <= 0:
                    return out
            start = seq + 1
        if start <= through:
            out.append((start, min(through, start + budget - 1)))
        return out


class HeldBytes:
    """What every hold-back of one component holds, in payload bytes: at most ``max_bytes``
    (a message that would pass it is not held; its sender sends it again)."""

    __slots__ = ("max_bytes", "used")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0

    def room_for(self, size: int) -> bool:
        return self.used + size <= self.max_bytes


class HoldBack(Generic[T]):
    """Messages that arrived ahead of a gap, released in sequence order once it fills.

    Each held message's ``size`` is charged to the shared ``HeldBytes`` and given back
    when it leaves: released, dropped, or cleared with a stream that is discarded.
    """

    __slots__ = ("_budget", "_held", "_sizes")

    def __init__(self, budget: HeldBytes) -> None:
        self._budget = budget
        self._held: dict[int, T] = {}
        self._sizes: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, seq: int) -> bool:
        return seq in self._held

    def seqs(self) -> Iterable[int]:
        return self._held.keys()

    def hold(self, seq: int, item: T, size: int) -> bool:
        """Hold ``item`` of ``size`` bytes; False (not held) if the budget has no room."""
        if seq in self._held:
            return True
        budget = self._budget
        if not budget.room_for(size):
            return False
        self._held[seq] = item
        self._sizes[seq] = size
        budget.used += size
        return True

    def release(self, present: SeqSet) -> Iterator[tuple[int, T]]:
        """Yield held messages that are next in order, marking each present as it goes."""
        held = self._held
        while held:
            seq = present.upto + 1
            item = held.pop(seq, None)
            if item is None:
                return
            self._budget.used -= self._sizes.pop(seq)
            present.add(seq)
            yield seq, item

    def drop_through(self, seq: int) -> list[tuple[int, T]]:
        """Remove and return, in order, held messages numbered ``seq`` or lower."""
        gone = sorted(((s, item) for s, item in self._held.items() if s <= seq), key=_first)
        for s, _ in gone:
            del self._held[s]
            self._budget.used -= self._sizes.pop(s)
        return gone

    def clear(self) -> None:
        """Drop everything held (its stream is discarded)."""
        self._budget.used -= sum(self._sizes.values())
        self._held.clear()
        self._sizes.clear()


def _first(pair: tuple[int, object]) -> int:
    return pair[0]
