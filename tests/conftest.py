"""Suite-wide: pytester for plugin tests, and a check that nothing is left running."""

from __future__ import annotations

import pytest

from zcluster.testing.processes import children_still_running, listening_sockets

pytest_plugins = ["pytester"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any test left a child process or a listening socket behind."""
    problems = []
    if children := children_still_running():
        problems.append(f"processes left running by the tests: {children}")
    if sockets := listening_sockets():
        problems.append(f"sockets still listening (hex address:port): {sockets}")
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for problem in problems:
            if reporter is not None:
                reporter.write_line(problem, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
