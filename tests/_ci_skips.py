"""The CI rule as a pytest plugin (imported by tests/conftest.py): with CI=true a skip is a failure.

A missing dependency must never pass silently in CI. Two ways a test can skip are closed here: at run time
(`pytest.skip`, `importorskip` inside a test or fixture) and at collection (a module-level `importorskip`, which
skips the whole module before any test runs). Only tests carrying the `device` marker (real edge hardware,
deselected by default) may skip, and only at run time; the marker is what counts, not a test or parametrize
id called "device". A device-only module must skip inside its tests (tests/test_jetson_device.py does).
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[-1]) if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and item.get_closest_marker("device") is None and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"CI=true: this test skipped ({_skip_reason(report)}); "
                           "in CI every dependency must be installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:  # a module that fails to import has no markers to read: no exemption here
        report.outcome = "failed"
        report.longrepr = (f"CI=true: {collector.nodeid or collector.name} was skipped at collection "
                           f"({_skip_reason(report)}); in CI every dependency must be installed")
