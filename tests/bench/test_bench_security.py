"""``zcluster bench --scenarios security``: fan-out and direct sends in modes none, curve
and jwt side by side in one run, raw pyzmq over CURVE next to plain, and the costs.

As for the rest of the bench, nothing here checks a speed: only that every mode runs
on real sockets (127.0.0.1) and is reported with its cost next to mode none.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.bench.test_bench_cli import RATIO, bench, table_rows
from zcluster.bench import costs, modes, report, scenarios
from zcluster.bench.runner import FamilyRun
from zcluster.bench.samples import (
    CPU_PER_MESSAGE,
    LOWEST_CPU_PER_MESSAGE,
    Sample,
    best_burst,
    cpu_per_message_us,
    cpu_samples,
    delivery_sample,
)
from zcluster.security.config import SecurityMode

#: the smallest run: one repetition, one burst, 100 direct and 150 fan-out messages
SECURITY_RUN = ("--quick", "--scenarios", "security", "--messages", "100")
FAMILIES = ("pub/sub 1->4", "direct send")
GUARANTEES = ("AT_MOST_ONCE", "AT_LEAST_ONCE")


def cost_rows(stdout: str) -> dict[str, list[str]]:
    """The costs table's lines by title, split into their columns."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("security cost "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        title, unit_and_figures = line.split("  ", 1)
        rows[title.strip()] = unit_and_figures.split()
    return rows


def what_failed(stdout: str) -> str:
    """The report's list of broken promises and failed sessions (the table is long)."""
    for heading in ("BROKEN PROMISES", "FAILED SESSIONS"):
        if heading in stdout:
            return stdout[stdout.index(heading) :]
    return stdout


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform != "linux", reason="the bench's workers are Linux processes")
def test_every_mode_is_measured_with_its_cost_next_to_none(tmp_path: Path) -> None:
    out = tmp_path / "security.json"
    scratch = tmp_path / "tmp"  # where the throwaway keys go, and must be gone from
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    result = bench(*SECURITY_RUN, "--json", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 0, what_failed(result.stdout) + result.stderr[-2000:]

    rows = table_rows(result.stdout)
    expected = [  # per scenario and mode: deliveries per second, then CPU time per delivery
        f"{m} {f} {g}{cpu}"
        for f in FAMILIES
        for m in ("none", "curve", "jwt")
        for cpu in ("", " CPU")
        for g in GUARANTEES
    ]
    assert list(rows) == expected
    for title, line in rows.items():  # a raw side (plain or CURVE) but for jwt
        assert bool(RATIO.search(line)) == (not title.startswith("jwt")), line

    by_cost = cost_rows(result.stdout)
    assert list(by_cost) == [t for t in expected if not t.startswith("none")]
    for title, cells in by_cost.items():
        unit, _zc, _zc_none, zc_ratio, _range, *raw = cells
        assert unit == ("us" if title.endswith(" CPU") else "msg/s")
        assert zc_ratio.endswith("x")
        if title.startswith("curve"):
            assert raw[2].endswith("x"), cells  # raw CURVE / raw plain
        else:
            assert raw == ["-"] * 4, cells
    assert "zc/none: zcluster in the row's mode / zcluster in mode none" in result.stdout

    document = json.loads(out.read_text())
    assert document["settings"]["groups"] == ["security"]
    assert document["settings"]["security_modes"] == ["none", "curve", "jwt"]
    by_title = {s["scenario"]: s for s in document["scenarios"]}
    assert list(by_title) == expected
    assert all(s["lost"] == 0 for t, s in by_title.items() if t.endswith("AT_LEAST_ONCE"))
    cpu = [s for t, s in by_title.items() if t.endswith(" CPU")]
    assert all(s["unit"] == "us" and s["lower_is_better"] for s in cpu)
    assert all(s["zcluster"]["median"] > 0 for s in cpu)
    assert all(s["raw"]["median"] > 0 for s in cpu if s["raw"] is not None)
    found = {c["scenario"]: c for c in document["security_costs"]}
    assert list(found) == list(by_cost)
    for title, cost in found.items():
        mode = title.split()[0]
        assert cost["reference"] == title.replace(mode, "none", 1)
        assert cost["zcluster_ratio"]["median"] == pytest.approx(
            by_title[title]["zcluster"]["median"]
            / by_title[cost["reference"]]["zcluster"]["median"]
        )
        assert (cost["raw_ratio"] is None) == (mode == "jwt")
    assert not list(scratch.iterdir())  # the keys went with their sessions


@pytest.mark.parametrize("mode", [SecurityMode.CURVE, SecurityMode.JWT, SecurityMode.CURVE_JWT])
def test_throwaway_keys_make_configurations_that_load_then_vanish(mode: SecurityMode) -> None:
    with modes.throwaway(mode) as secured:
        seed = secured.for_seed()
        joiner = secured.for_joiner("127.0.0.1:5000")
        assert seed is not None and joiner is not None
        seed_credentials, joiner_credentials = seed.load(), joiner.load()
        if mode.uses_curve:
            assert seed_credentials.key_pair is not None
            assert joiner_credentials.seed_keys == {
                "127.0.0.1:5000": seed_credentials.key_pair.public
            }
            assert joiner_credentials.key_pair != seed_credentials.key_pair
        if mode.uses_tokens:
            assert secured.jwt_key is not None  # hex: no byte of it a newline to strip
            assert len(secured.jwt_key.read_text().strip()) == 2 * modes.JWT_SECRET_BYTES
            assert seed_credentials.signing_key is not None
            assert joiner_credentials.signing_key is not None
        files = [path for path in (secured.seed_key, secured.jwt_key) if path is not None]
        assert files and all(path.is_file() for path in files)
    assert not any(path.parent.exists() for path in files)


def test_mode_none_needs_no_keys() -> None:
    with modes.throwaway(SecurityMode.NONE) as secured:
        assert secured is modes.NO_SECURITY
        assert secured.for_seed() is None and secured.for_joiner("127.0.0.1:5000") is None
        assert secured.label == ""


def _security_runs() -> list[FamilyRun]:
    """Two repetitions of direct sends in modes none, curve (with raw) and jwt (without)."""
    runs = []
    for mode, zcluster, raw in (
        ("none", [100.0, 80.0], [1000.0, 800.0]),
        ("curve", [50.0, 60.0], [500.0, 600.0]),
        ("jwt", [90.0, None], None),
    ):
        reference = None if mode == "none" else "none direct AT_MOST_ONCE"
        row = scenarios.Row(
            "AT_MOST_ONCE",
            f"{mode} direct AT_MOST_ONCE",
            "msg/s",
            None if raw is None else "delivered",
            reference=reference,
        )
        family = scenarios.Family("security", f"{mode} direct", (row,), zcluster=dict)
        runs.append(
            FamilyRun(
                family,
                zcluster=[{"AT_MOST_ONCE": Sample(v)} for v in zcluster],
                raw=[] if raw is None else [{"delivered": Sample(v)} for v in raw],
            )
        )
    return runs


def test_costs_pair_each_mode_with_none_repetition_by_repetition() -> None:
    found = costs.summarize(report.summarize(_security_runs()))
    curve, jwt = found
    assert curve.reference.row.title == jwt.reference.row.title == "none direct AT_MOST_ONCE"
    assert curve.zcluster_ratios == [0.5, 0.75]
    assert curve.raw_ratios == [0.5, 0.75]
    assert jwt.zcluster_ratios == [0.9]  # repetition 2 failed: no pair
    assert jwt.raw_ratios == []
    header, curve_line, jwt_line = costs.text(found).split("\n\n")[0].splitlines()
    assert header.split()[:4] == ["security", "cost", "unit", "zcluster"]
    assert curve_line.split()[3:] == [
        "msg/s", "55", "90", "0.62x", "0.50-0.75", "550", "900", "0.62x", "0.50-0.75"
    ]  # fmt: skip
    assert jwt_line.split()[3:] == ["msg/s", "90", "90", "0.90x", "0.90-0.90", "-", "-", "-", "-"]
    assert costs.cost_json(jwt)["raw_ratio"] is None
    assert costs.cost_json(curve)["zcluster_ratio"] == {
        "values": [0.5, 0.75],
        "median": 0.625,
        "min": 0.5,
        "max": 0.75,
    }
    assert costs.text([]) == ""


def test_cpu_time_per_message_counts_every_process_and_keeps_the_lowest_burst() -> None:
    results = [
        {"received": 100, "last_arrival_s": 11.0, "cpu_s": 0.001},
        {"received": 100, "last_arrival_s": 11.0, "cpu_s": 0.002},
    ]
    sample = delivery_sample(10.0, results, 100, sender_cpu_s=0.003)
    assert sample.extra[CPU_PER_MESSAGE] == pytest.approx(30.0)  # 6 ms over 200 deliveries
    assert CPU_PER_MESSAGE not in delivery_sample(10.0, results, 100).extra
    assert cpu_per_message_us([0.1, None], 10) is None
    assert cpu_per_message_us([0.1], 0) is None

    bursts = [
        Sample(100.0, extra={CPU_PER_MESSAGE: 30.0}),
        Sample(200.0, extra={CPU_PER_MESSAGE: 40.0}),
        Sample(50.0, extra={CPU_PER_MESSAGE: None}),
    ]
    best = best_burst(bursts)
    assert best.value == 200.0
    assert best.extra[LOWEST_CPU_PER_MESSAGE] == 30.0
    assert best.extra["bursts_" + CPU_PER_MESSAGE] == [30.0, 40.0, None]
    found = cpu_samples({"AT_MOST_ONCE": best, "p50": Sample(1.0)})
    assert list(found) == ["AT_MOST_ONCE cpu"]
    assert found["AT_MOST_ONCE cpu"].value == 30.0
