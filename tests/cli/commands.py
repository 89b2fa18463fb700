"""The zcluster command line as processes, for the tests: nodes whose log can be polled,
and one-shot commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_until

PROCESS_EXIT_TIMEOUT_S = 15


class NodeProcess:
    """A ``zcluster node`` process whose log goes to a file we can poll."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zcluster", "node", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float, after: int = 0) -> bool:
        return wait_until(lambda: text in self.log()[after:], timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PROCESS_EXIT_TIMEOUT_S)
        self._log.close()


def zcluster(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcluster", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
