"""The frame decoders, fuzzed with coverage guidance (atheris) for a bounded time, from
a corpus of valid frames of every kind and of the hostile shapes zcluster.testing.flood
sends; and every input of that corpus (and every past finding) replayed as a test.

Longer runs on demand: ``ZCLUSTER_FUZZ_SECONDS=600 pytest tests/fuzz``. A finding is
written by libFuzzer as ``crash-*`` (printed below); put it in tests/fuzz/findings/.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.test_wire import CASES, PROTOCOL_VERSION, payload_for, raw_header
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.testing.flood import SHAPES
from zcluster.wire import Encoder, one_frame_prefix

FUZZER = Path(__file__).with_name("fuzz_wire.py")
FINDINGS = Path(__file__).with_name("findings")
SEPARATOR = b"\x00\xff\x00"  # fuzz_wire.py cuts its input into frames here
FUZZ_SECONDS = int(os.environ.get("ZCLUSTER_FUZZ_SECONDS", "20"))
HAS_ATHERIS = importlib.util.find_spec("atheris") is not None


def seed_inputs() -> list[bytes]:
    """Valid frames of every kind, both publication forms, and the flood's shapes."""
    seeds = []
    for kind, (body, _) in sorted(CASES.items()):
        header = raw_header(PROTOCOL_VERSION, int(kind), "n1", 5, 6, body)
        seeds.append(header + SEPARATOR + payload_for(kind))
        seeds.append(b"~" + SEPARATOR + header + SEPARATOR + payload_for(kind))
    encoder = Encoder("n1", 7)
    for seq, guarantee in ((0, DeliveryGuarantee.AT_MOST_ONCE), (3, DeliveryGuarantee.ORDERED)):
        prefix = one_frame_prefix("prices")
        seeds.append(encoder.publication_frame(prefix, seq, guarantee, b"payload"))
        topic, header, payload = encoder.published("prices", msg.Publish(seq, guarantee), b"p")
        seeds.append(SEPARATOR.join((topic, header, payload)))
    rng = random.Random(1)
    for shape in SHAPES.values():
        frames = shape(rng, "flood")
        if sum(map(len, frames)) <= 1 << 16:  # the bombs are left to the flood test
            seeds.append(SEPARATOR.join(frames))
    return seeds


def corpus() -> list[bytes]:
    findings = sorted(FINDINGS.glob("*")) if FINDINGS.is_dir() else []
    return seed_inputs() + [path.read_bytes() for path in findings]


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed here")
def test_every_corpus_input_is_read_or_refused_with_a_wire_error() -> None:
    sys.argv = [str(FUZZER)]
    spec = importlib.util.spec_from_file_location("fuzz_wire", FUZZER)
    assert spec is not None and spec.loader is not None
    fuzz_wire = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz_wire)
    inputs = corpus()
    assert len(inputs) > 2 * len(CASES)
    for data in inputs:
        fuzz_wire.read_as_a_node_would(data)


@pytest.mark.skipif(not HAS_ATHERIS, reason="atheris is not installed here")
@pytest.mark.timeout(FUZZ_SECONDS + 60)
def test_coverage_guided_fuzzing_finds_nothing(tmp_path: Path) -> None:
    seeds = tmp_path / "corpus"
    seeds.mkdir()
    for i, data in enumerate(corpus()):
        (seeds / f"seed-{i:03d}").write_bytes(data)
    run = subprocess.run(
        [
            *(sys.executable, str(FUZZER), str(seeds), f"-max_total_time={FUZZ_SECONDS}"),
            *("-rss_limit_mb=2048", "-timeout=10", f"-artifact_prefix={tmp_path}/"),
        ],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 50,
    )
    found = {p.name: p.read_bytes().hex() for p in tmp_path.glob("crash-*")}
    assert run.returncode == 0 and not found, f"{found}\n{run.stderr[-3000:]}"
    assert "Done" in run.stderr, run.stderr[-2000:]
