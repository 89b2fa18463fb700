"""Cluster nodes as separate OS processes, for crashes that lose kernel buffers too.

Each node is a ``zcluster node`` process on 127.0.0.1. ``kill()`` sends
SIGKILL. An in-process observer node reads each process's own view through
the built-in ``zcluster.view`` handler, so a :class:`ProcessNode` answers the
same queries as an in-process node.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zcluster.errors import ZclusterError
from zcluster.protocol.members import Member, MemberStatus
from zcluster.runtime.asyncnode import VIEW_HANDLER
from zcluster.runtime.node import Node

#: how long a node process may take to bind and log that it listens
PROCESS_START_TIMEOUT_S = 15.0
#: how long a node process may take to exit after a signal
PROCESS_EXIT_TIMEOUT_S = 10.0
#: a view query to a node process gives up after this
VIEW_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.02


class ProcessNode:
    """One ``zcluster node`` process, queried through an observer node."""

    def __init__(
        self,
        node_id: str,
        bind: str,
        seeds: list[str],
        observer: Node | None,
        flags: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.address = bind
        self._observer = observer
        self._log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in wait()
            prefix=f"zcluster-{node_id}-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log_file.name)
        args = [sys.executable, "-m", "zcluster", "node", "--id", node_id, "--bind", bind]
        for seed in seeds:
            args += ["--seed", seed]
        args += flags or []  # security
        self.process = subprocess.Popen(
            args, stdout=self._log_file, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
        while "listening on" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log()[-500:]
                self.cleanup()
                raise ZclusterError(f"node process {node_id} did not start: {tail}")
            time.sleep(POLL_INTERVAL_S)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no goodbye, sockets and kernel buffers gone at once."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the node leaves the cluster gracefully."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.wait()

    def wait(self) -> None:
        try:
            self.process.wait(PROCESS_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(PROCESS_EXIT_TIMEOUT_S)
        self._log_file.close()

    def cleanup(self) -> None:
        self.kill()
        self.log_path.unlink(missing_ok=True)

    # ------------------------------------------------------------ the Node query API

    def _view(self) -> dict[str, Any]:
        if self._observer is None:
            raise ZclusterError("no observer node to ask")
        view: dict[str, Any] = self._observer.request(
            self.node_id, VIEW_HANDLER, None, timeout=VIEW_TIMEOUT_S
        )
        return view

    def members(self) -> list[Member]:
        return [_member(m) for m in self._view()["members"]]

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members() if m.node_id == node_id), None)

    def view_digest(self) -> str:
        return str(self._view()["digest"])


def die_with_parent() -> None:
    """In a child process: have it SIGKILLed if its parent dies without cleaning up."""
    with contextlib.suppress(OSError):  # not Linux: close() still kills it
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def _member(record: dict[str, Any]) -> Member:
    return Member(
        record["node_id"],
        record["incarnation"],
        record["version"],
        MemberStatus[record["status"].upper()],
        record["address"],
        record["pub_address"],
    )


def children_still_running() -> list[int]:
    """Pids of this process's children that are alive (zombies excluded), from /proc."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def free_port_pair() -> int:
    """A port P such that P and P+1 (ROUTER and PUB) are both free on 127.0.0.1 now."""
    for _ in range(200):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise ZclusterError("no free pair of ports found on 127.0.0.1")


def listening_sockets() -> list[str]:
    """Local addresses of TCP sockets this process still listens on, from /proc."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                out.append(fields[1])
    return out
