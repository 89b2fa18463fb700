"""SeqSet and HoldBack against a plain-set model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.core.sequences import HeldBytes, HoldBack, SeqSet

PROPERTY = settings(max_examples=300, deadline=None, database=None)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 60)),
        st.tuples(st.just("advance"), st.integers(0, 60)),
        st.tuples(st.just("range"), st.tuples(st.integers(1, 60), st.integers(0, 15))),
    ),
    max_size=60,
)


@PROPERTY
@given(operations, st.integers(0, 70), st.integers(1, 80))
def test_property_seqset_matches_a_plain_set(
    ops: list[tuple[str, object]], through: int, budget: int
) -> None:
    seqs, model = SeqSet(), set()
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, int)
            assert seqs.add(arg) == (arg not in model)
            model.add(arg)
        elif op == "advance":
            assert isinstance(arg, int)
            seqs.advance_to(arg)
            model |= set(range(1, arg + 1))
        else:
            assert isinstance(arg, tuple)
            first, length = arg
            seqs.add_range(first, first + length)
            model |= set(range(first, first + length + 1))
    for n in range(1, 80):
        assert (n in seqs) == (n in model)
    # upto is the contiguous prefix; nothing at or below it is kept in `above`
    assert all(n in model for n in range(1, seqs.upto + 1))
    assert seqs.upto + 1 not in model
    assert all(s > seqs.upto for s in seqs.above)
    missing = [n for n in range(seqs.upto + 1, through + 1) if n not in model][:budget]
    ranges = seqs.gaps(through, budget)
    assert [n for a, b in ranges for n in range(a, b + 1)] == missing
    assert all(a <= b for a, b in ranges)


def test_gaps_treat_held_numbers_as_present() -> None:
    seqs = SeqSet(3)
    seqs.add(9)
    assert seqs.gaps(12, 100) == [(4, 8), (10, 12)]
    assert seqs.gaps(12, 100, also_present=[5, 6]) == [(4, 4), (7, 8), (10, 12)]
    assert seqs.gaps(12, 3) == [(4, 6)]


def test_holdback_releases_in_order_once_the_gap_fills() -> None:
    present, held = SeqSet(), HoldBack[str](HeldBytes(100))
    held.hold(3, "c", 1)
    held.hold(2, "b", 1)
    held.hold(5, "e", 1)
    assert list(held.release(present)) == []
    present.add(1)
    assert list(held.release(present)) == [(2, "b"), (3, "c")]
    assert present.upto == 3 and len(held) == 1
    assert held.drop_through(5) == [(5, "e")]
    assert len(held) == 0


holdback_operations = st.lists(
    st.one_of(
        st.tuples(st.just("hold"), st.integers(0, 2), st.integers(1, 40), st.integers(0, 30)),
        st.tuples(st.just("fill"), st.integers(0, 2), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("drop"), st.integers(0, 2), st.integers(0, 40), st.just(0)),
        st.tuples(st.just("clear"), st.integers(0, 2), st.just(0), st.just(0)),
    ),
    max_size=80,
)


@PROPERTY
@given(holdback_operations)
def test_hold_backs_sharing_a_budget_charge_exactly_what_they_hold(
    operations: list[tuple[str, int, int, int]],
) -> None:
    budget = HeldBytes(100)
    streams = [(SeqSet(), HoldBack[int](budget)) for _ in range(3)]
    sizes: list[dict[int, int]] = [{}, {}, {}]  # the model: what each holds, by number
    for op, which, seq, size in operations:
        present, held = streams[which]
        model = sizes[which]
        if op == "hold" and seq not in present:
            fits = sum(map(sum, (m.values() for m in sizes))) + size <= 100
            assert held.hold(seq, seq, size) == (fits or seq in model)
            if fits and seq not in model:
                model[seq] = size
        elif op == "fill":  # the gap up to seq fills: what follows in order is released
            for number in range(present.upto + 1, seq + 1):
                if number not in model:  # a held number is never present besides
                    present.add(number)
            for number, _ in held.release(present):
                del model[number]
        elif op == "drop":
            for number, _ in held.drop_through(seq):
                del model[number]
        elif op == "clear":
            held.clear()
            model.clear()
        assert budget.used == sum(map(sum, (m.values() for m in sizes))) <= 100
        assert all(len(h) == len(m) for (_, h), m in zip(streams, sizes, strict=True))
