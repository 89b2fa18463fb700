"""Runs the families: repetition by repetition, the raw limit and then zcluster, alternating.

Repetition 1 of every family runs before repetition 2 of any, so that slow
drifts of the machine spread over all of them; within a family the raw
session runs right before the zcluster one, and the two form a pair. A
session that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from zcluster.bench.samples import Sample
from zcluster.bench.scenarios import Family, Session
from zcluster.errors import ZclusterError

#: one session's samples, or None when it failed
Outcome = dict[str, Sample] | None


@dataclasses.dataclass
class FamilyRun:
    """What one family gave, repetition by repetition (aligned: index k is repetition k+1)."""

    family: Family
    zcluster: list[Outcome] = dataclasses.field(default_factory=list)
    raw: list[Outcome] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def run(
    families: Sequence[Family], repeat: int, progress: Callable[[str], None]
) -> list[FamilyRun]:
    runs = [FamilyRun(family) for family in families]
    started_s = time.monotonic()
    for rep in range(1, repeat + 1):
        for family_run in runs:
            family = family_run.family
            if rep > 1 and not family.repeated:
                continue
            timings = []
            for side, session, outcomes in (
                ("raw", family.raw, family_run.raw),
                ("zcluster", family.zcluster, family_run.zcluster),
            ):
                if session is None:
                    continue
                took_s = time.monotonic()
                outcome = _measure(session, f"rep {rep} {side}", family_run.errors)
                outcomes.append(outcome)
                took = "FAILED" if outcome is None else f"{time.monotonic() - took_s:.1f} s"
                timings.append(f"{side} {took}")
            elapsed_s = time.monotonic() - started_s
            progress(f"[{elapsed_s:6.1f} s] rep {rep}/{repeat} {family.name}: {', '.join(timings)}")
    return runs


def _measure(session: Session, label: str, errors: list[str]) -> Outcome:
    try:
        return session()
    except (ZclusterError, OSError) as exc:
        errors.append(f"{label}: {exc}")
        return None
