"""Networked tests start real processes; none may outlive its test, even a failed one."""

import pytest
from _harness import SLOWDOWN, kill_leftovers


@pytest.fixture(autouse=True)
def no_leftover_processes():
    yield
    kill_leftovers()


def pytest_report_header(config):
    return f"networked tests: deadlines scaled by {SLOWDOWN:.2f} (machine speed probe)"
