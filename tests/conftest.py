"""Suite-wide: pytester for plugin tests, and a check that nothing is left running."""

from __future__ import annotations

import pytest

from zcluster.testing.processes import children_still_running

pytest_plugins = ["pytester"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any test left a child process (node, example, CLI) behind."""
    leftovers = children_still_running()
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"processes left running by the tests: {leftovers}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
