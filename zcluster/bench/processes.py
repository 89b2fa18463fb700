"""Worker processes of one measurement: started fresh, talked to through a queue, always reaped.

Workers start with the ``spawn`` method, so each begins with a clean
interpreter (no inherited ZeroMQ context, loop or thread). A worker reports
to the parent through its :class:`Link`; an exception in a worker becomes an
``error`` report, which the parent raises as :class:`BenchError`. Every wait
on either side is bounded. Leaving a :class:`Workers` block, however it is
left (Ctrl-C included), reaps every worker it started: a bounded join, then
SIGTERM, then SIGKILL, each to that worker's own pid.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import resource
import signal
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event, Semaphore
from pathlib import Path
from typing import Any

from zcluster.bench.samples import BenchError
from zcluster.testing.processes import die_with_parent

#: workers get this long to start, join or connect, and warm up
READY_TIMEOUT_S = 30.0
#: one measured transfer may take this long at most
RUN_TIMEOUT_S = 120.0
#: all of a measurement's workers get this long to exit once it is over
EXIT_TIMEOUT_S = 10.0
#: after SIGTERM, then after SIGKILL, a worker gets this long to go
SIGNAL_WAIT_S = 3.0
_POLL_S = 0.05
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class Link:
    """A worker's line to the parent: reports out, and the parent's signal that it is over."""

    def __init__(self, role: str, reports: Queue[dict[str, Any]], over: Event) -> None:
        self.role = role
        self._reports = reports
        self._over = over

    def report(self, kind: str, **fields: Any) -> None:
        self._reports.put({"role": self.role, "kind": kind, **fields})

    def wait_over(self, timeout_s: float) -> bool:
        """Wait until the parent has what it needs from this measurement (or gave up)."""
        return self._over.wait(timeout_s)

    def wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``condition()``, for at most ``timeout_s``, and not past the end of
        the measurement; returns ``condition()``."""
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline and not self._over.is_set():
            time.sleep(_POLL_S)
        return condition()


def _run_worker(target: Callable[..., None], link: Link, *args: Any) -> None:
    """A worker's entry point: run ``target``, turning failures into an error report."""
    die_with_parent()
    logging.getLogger("zcluster").setLevel(logging.ERROR)
    try:
        target(link, *args)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the parent reaps
        pass
    except Exception as exc:
        link.report("error", error=f"{type(exc).__name__}: {exc}")


class Workers:
    """The worker processes of one measurement (a context manager that reaps them)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._context = multiprocessing.get_context("spawn")
        self._reports: Queue[dict[str, Any]] = self._context.Queue()
        self._over = self._context.Event()
        self._processes: list[SpawnProcess] = []
        self._killed: set[int] = set()
        self._backlog: list[dict[str, Any]] = []

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()

    def event(self) -> Event:
        return self._context.Event()

    def semaphore(self) -> Semaphore:
        return self._context.Semaphore(0)

    def start(self, target: Callable[..., None], role: str, *args: Any) -> SpawnProcess:
        """Start ``target(link, *args)`` in a new process."""
        link = Link(role, self._reports, self._over)
        process = self._context.Process(
            target=_run_worker, args=(target, link, *args), name=f"zcluster-bench-{role}"
        )
        process.daemon = True
        process.start()
        self._processes.append(process)
        return process

    def expect(self, kind: str, timeout_s: float, role: str | None = None) -> dict[str, Any]:
        """The next report of ``kind`` (from ``role``, or any worker).

        Raises BenchError when a worker reports an error or dies, or when
        nothing comes within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            for index, report in enumerate(self._backlog):
                if report["kind"] == kind and role in (None, report["role"]):
                    return self._backlog.pop(index)
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                who = role or "the workers"
                raise BenchError(f"{self.label}: no {kind!r} from {who} within {timeout_s:g} s")
            try:
                report = self._reports.get(timeout=min(left_s, _POLL_S))
            except queue.Empty:
                self._check_alive()
                continue
            if report["kind"] == "error":
                raise BenchError(f"{self.label}: {report['role']}: {report['error']}")
            self._backlog.append(report)

    def kill(self, process: SpawnProcess) -> None:
        """SIGKILL one worker on purpose (its death is then no failure)."""
        if process.pid is not None:
            self._killed.add(process.pid)
            os.kill(process.pid, signal.SIGKILL)

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.exitcode not in (None, 0) and process.pid not in self._killed:
                raise BenchError(f"{self.label}: {process.name} exited with {process.exitcode}")

    def reap(self) -> None:
        """Tell the workers it is over, then join them (bounded), then signal stragglers."""
        self._over.set()
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while any(p.is_alive() for p in self._processes) and time.monotonic() < deadline:
            self._drain()  # a worker cannot exit while its reports sit in a full pipe
            time.sleep(_POLL_S)
        for process in self._processes:
            for stop in (process.terminate, process.kill):
                if process.is_alive():
                    stop()
                    process.join(SIGNAL_WAIT_S)
            process.join(0)
        self._reports.close()
        self._reports.cancel_join_thread()

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty, OSError, EOFError):
            while True:
                self._reports.get_nowait()


def cpu_s() -> float:
    """CPU time this process has used so far, all its threads (libzmq's I/O threads and a
    node's loop too), user and system: waiting costs none, so a window may span waits."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` now, from ``/proc`` (Linux)."""
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError) as exc:
        raise BenchError(f"cannot read the memory of process {pid} ({exc})") from None
    return resident_pages * _PAGE_BYTES
