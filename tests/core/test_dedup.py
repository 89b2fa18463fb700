"""The duplicate window: bounded by count and by age, on any clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import ConfigError
from zcluster.core.dedup import DedupWindow
from zcluster.delivery import AckStatus, DeliveryGuarantee, MessageDeduplicator


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_second_sighting_within_expiry_is_a_duplicate() -> None:
    clock = FakeClock()
    dedup = MessageDeduplicator(capacity=10, expiry=5.0, clock=clock)
    message_id = ("a", 7, 1)
    assert not dedup.is_duplicate(message_id)
    clock.now = 4.9
    assert dedup.is_duplicate(message_id)


def test_an_id_older_than_expiry_is_forgotten_and_seen_anew() -> None:
    clock = FakeClock()
    dedup = MessageDeduplicator(capacity=10, expiry=5.0, clock=clock)
    assert not dedup.is_duplicate("m")
    clock.now = 5.0
    assert not dedup.is_duplicate("m")  # expired: a new sighting, remembered again
    clock.now = 6.0
    assert dedup.is_duplicate("m")


def test_capacity_forgets_the_least_recently_seen() -> None:
    clock = FakeClock()
    dedup = MessageDeduplicator(capacity=3, expiry=100.0, clock=clock)
    for message_id in ("a", "b", "c"):
        assert not dedup.is_duplicate(message_id)
    assert dedup.is_duplicate("a")  # "a" is now the most recently seen
    assert not dedup.is_duplicate("d")  # evicts "b"
    assert len(dedup) == 3
    assert dedup.is_duplicate("a") and dedup.is_duplicate("c")
    assert not dedup.is_duplicate("b")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 3)), max_size=200))
def test_window_never_exceeds_its_bounds_and_never_misses_a_recent_repeat(
    steps: list[tuple[int, float]],
) -> None:
    window = DedupWindow(capacity=8, expiry=2.0)
    now = 0.0
    last_new: dict[int, float] = {}
    for message_id, advance in steps:
        now += advance
        duplicate = window.seen(message_id, now)
        recent = message_id in last_new and now - last_new[message_id] < 2.0
        if duplicate:
            assert recent  # a duplicate verdict is only ever for an id seen within expiry
        else:
            last_new[message_id] = now
        assert len(window) <= 8


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ConfigError):
        MessageDeduplicator(capacity=0, expiry=1.0)
    with pytest.raises(ConfigError):
        MessageDeduplicator(capacity=1, expiry=0.0)


def test_guarantees_and_statuses_are_named_as_in_the_design() -> None:
    assert [g.name for g in DeliveryGuarantee] == [
        "AT_MOST_ONCE",
        "AT_LEAST_ONCE",
        "EXACTLY_ONCE",
        "ORDERED",
        "CAUSAL",
        "TRANSACTIONAL",
    ]
    assert [s.name for s in AckStatus] == ["PENDING", "DELIVERED", "FAILED", "EXPIRED"]
    assert not AckStatus.PENDING.is_final and AckStatus.EXPIRED.is_final


class ModelWindow:
    """The window's rules, written plainly: LRU by sighting, each id kept ``expiry``
    after it was last remembered, the clock never going back."""

    def __init__(self, capacity: int, expiry: float) -> None:
        self.capacity, self.expiry, self.now = capacity, expiry, 0.0
        self.held: dict[object, tuple[float, object]] = {}  # insertion order = LRU order

    def recall(self, message_id: object, now: float) -> object:
        self.now = max(self.now, now)
        self.held = {i: v for i, v in self.held.items() if v[0] > self.now}
        if message_id in self.held:
            self.held[message_id] = self.held.pop(message_id)
            return self.held[message_id][1]
        self.remember(message_id, "running")
        return None

    def remember(self, message_id: object, outcome: object) -> None:
        self.held.pop(message_id, None)
        self.held[message_id] = (self.now + self.expiry, outcome)
        if len(self.held) > self.capacity:
            del self.held[next(iter(self.held))]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5),
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 7), st.floats(0, 3), st.sampled_from([None, "x"])),
        max_size=80,
    ),
)
def test_property_the_window_follows_its_rules(
    capacity: int, steps: list[tuple[bool, int, float, str | None]]
) -> None:
    """Sightings, settlements and the passing of time, against the rules written plainly:
    every answer and every size agree (stale deadlines never forget a live id)."""
    window, model = DedupWindow(capacity, expiry=2.0), ModelWindow(capacity, expiry=2.0)
    now = 0.0
    for recall, message_id, advance, error in steps:
        now += advance
        if recall:
            got = window.recall(message_id, now)
            want = model.recall(message_id, now)
            if want is None:
                assert got is None
            elif want == "running":
                assert got is not None and not got.finished
            else:
                assert got is not None and got.finished and ("done", got.error) == want
        else:
            window.settle(message_id, error)
            model.remember(message_id, ("done", error))
        model.held = {i: v for i, v in model.held.items() if v[0] > model.now}
        assert len(window) == len(model.held)
