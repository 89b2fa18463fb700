"""Coverage-guided fuzzing of everything that reads frames from the network (atheris).

    python tests/fuzz/fuzz_wire.py CORPUS_DIR -max_total_time=600

Each input is cut into frames and read as the ROUTER reads a direct message and as
the SUB reads a publication (both forms, the fast path and the full decoder). A
decoder may only return a message or raise WireError: any other exception, a hang
or a crash is a finding (libFuzzer writes the input as ``crash-*``; it becomes a
regression test in tests/fuzz/findings/).
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from zcluster import wire
    from zcluster.errors import WireError
    from zcluster.protocol import messages as msg

#: the header limit of a node by default
LIMIT = 1024 * 1024


def read_as_a_node_would(data: bytes) -> None:
    """Every way a node reads frames, on ``data`` cut into up to four frames."""
    frames = data.split(b"\x00\xff\x00", 3)  # a separator the fuzzer soon learns to write
    with contextlib.suppress(WireError):
        wire.decode_direct(frames, LIMIT)
    with contextlib.suppress(WireError):
        wire.decode_published(frames, LIMIT)
    with contextlib.suppress(WireError):
        wire.decode_published([data], LIMIT)  # a publication in one frame
    for frame in frames:
        fast = wire.read_publish(frame)
        if fast is not None:  # the fast path takes only what the full decoder takes, alike
            envelope = wire.decode_header(frame, LIMIT)
            publish = envelope.message
            assert isinstance(publish, msg.Publish), frame
            full = (envelope.sender, envelope.incarnation, publish.seq, publish.guarantee)
            assert full == fast, (frame, full, fast)
    with contextlib.suppress(WireError):
        wire.decode_capabilities(data)


def main() -> None:
    atheris.Setup(sys.argv, read_as_a_node_would)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
