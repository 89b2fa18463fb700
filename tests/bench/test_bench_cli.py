"""``zcluster bench`` as a real process: small runs, real sockets, real worker processes.

Benchmarks are not tests: nothing here checks a speed, only that the command
runs, reports every selected scenario next to its raw baseline, writes the
JSON it promises, refuses bad options, and reaps its workers when interrupted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until

RUN_TIMEOUT_S = 90
EXIT_TIMEOUT_S = 30
#: the throughput and latency groups, with counts small enough for a few seconds
SMALL_RUN = ("--quick", "--scenarios", "pubsub,direct,rtt", "--messages", "500")
RATIO = re.compile(r"\s\d+\.\d\dx\s+\d+\.\d\d-\d+\.\d\d\s")


def bench(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcluster", "bench", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env=env,
    )


def table_rows(stdout: str) -> dict[str, str]:
    """The table's lines by scenario title (the text before the unit column)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("scenario "))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        title = line.split("  ")[0].strip()
        rows[title] = line
    return rows


def scenarios_by_title(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["scenario"]: s for s in document["scenarios"]}


def test_small_run_reports_zcluster_and_raw_for_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = bench(*SMALL_RUN, "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("scenario "))
    assert header.split()[:6] == ["scenario", "unit", "zcluster", "raw", "pyzmq", "zc/raw"]
    rows = table_rows(result.stdout)
    for guarantee in ("AT_MOST_ONCE", "AT_LEAST_ONCE", "EXACTLY_ONCE", "ORDERED"):
        for family in ("pub/sub 1->1", "pub/sub 1->4", "direct send"):
            assert f"{family} {guarantee}" in rows
    for title in ("Node.request p50", "Node.request p99", "AsyncNode.request p50"):
        assert title in rows
    assert all(RATIO.search(row) for row in rows.values()), rows

    document = json.loads(out.read_text())
    assert document["settings"]["messages_count"] == 500
    assert document["settings"]["groups"] == ["pubsub", "direct", "rtt"]
    assert document["machine"]["cores"] == os.cpu_count()
    assert {"python", "pyzmq", "libzmq", "zcluster", "git_revision"} <= set(document["machine"])
    by_title = scenarios_by_title(document)
    assert set(by_title) == set(rows)
    for scenario in by_title.values():
        assert len(scenario["zcluster"]["values"]) == len(scenario["raw"]["values"]) == 1
        assert scenario["zcluster"]["median"] > 0
        assert scenario["raw"]["median"] > 0
        assert scenario["ratio"]["median"] == pytest.approx(
            scenario["zcluster"]["median"] / scenario["raw"]["median"]
        )
    assert by_title["direct send ORDERED"]["lost"] == 0
    assert by_title["pub/sub 1->4 AT_LEAST_ONCE"]["lost"] == 0


def test_default_json_lands_in_the_working_directory(tmp_path: Path) -> None:
    result = bench("--quick", "--scenarios", "rtt", "--messages", "400", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    written = list(tmp_path.glob("zcluster-bench-*Z.json"))
    assert len(written) == 1
    assert str(written[0]) in result.stdout
    assert json.loads(written[0].read_text())["settings"]["groups"] == ["rtt"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--scenarios", "pubsub,nope", "unknown scenario group(s) nope"),
        ("--cluster-sizes", "3,1", "cluster sizes must be from 2"),
        ("--cluster-sizes", "three", "cluster sizes must be integers"),
    ],
)
def test_bad_options_are_one_line_errors(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    result = bench(option, value, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("zcluster: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


def children_of(pid: int) -> set[int]:
    """Live (non-zombie) children of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_ctrl_c_reaps_every_worker(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "zcluster", "bench", "--scenarios", "pubsub", "--repeat", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a shell job has
    )
    try:
        workers: set[int] = set()

        def working() -> bool:
            workers.update(children_of(process.pid))
            return len(workers) >= 3  # the resource tracker and a side's workers

        assert wait_until(working, EXIT_TIMEOUT_S)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert process.wait(EXIT_TIMEOUT_S) == 130
        assert wait_until(lambda: not any(alive(pid) for pid in workers), EXIT_TIMEOUT_S)
        assert not list(tmp_path.iterdir())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(EXIT_TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_of_every_group(tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    result = bench("--quick", "--json", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(out.read_text())
    groups = {s["group"] for s in document["scenarios"]}
    assert groups == {"pubsub", "direct", "rtt", "payload", "membership", "memory"}
    for scenario in document["scenarios"]:
        assert scenario["zcluster"]["median"] is not None, scenario["scenario"]
        without_baseline = scenario["group"] == "membership" or scenario["key"] in (
            "per_peer",
            "per_pending",
        )
        assert (scenario["raw"] is None) == without_baseline, scenario["scenario"]
    rows = table_rows(result.stdout)
    assert "3 processes: SIGKILL seen DOWN" in rows
    assert "pub/sub 1->1 1 MB body" in rows and "MB/s" in rows["pub/sub 1->1 1 MB body"]
