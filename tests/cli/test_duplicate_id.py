"""``zcluster node`` with the id of a live member exits 1, naming the live one's address;
the live member is not disturbed (docs/cli.md)."""

from __future__ import annotations

from tests.cli.commands import PROCESS_EXIT_TIMEOUT_S
from zcluster.testing.processes import free_port_pair


def test_a_node_with_a_live_members_id_exits_1_naming_it(spawn) -> None:  # type: ignore[no-untyped-def]
    first, second = (f"127.0.0.1:{free_port_pair()}" for _ in range(2))
    n1 = spawn("n1", "--id", "n1", "--bind", first)
    assert n1.wait_log("listening on", 10), n1.log()
    n2 = spawn("n2", "--id", "n2", "--bind", second, "--seed", first)
    assert n1.wait_log("n2=up", 10), n1.log()
    impostor = spawn("impostor", "--id", "n2", "--seed", first)
    assert impostor.proc.wait(PROCESS_EXIT_TIMEOUT_S) == 1, impostor.log()
    assert (
        f"zcluster: error: node n2 cannot join: node id n2 is in use by a live member at {second}"
        in impostor.log()
    )
    assert "Traceback" not in impostor.log()
    for live in (n1, n2):
        assert live.proc.poll() is None
        assert "restarted" not in live.log() and "left" not in live.log(), live.log()
