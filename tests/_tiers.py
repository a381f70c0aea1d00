"""Test tiers as a pytest plugin (imported by tests/conftest.py): which marker each system service needs, the
``quick`` marker, and the guard that keeps the quick tier honest.

A test that starts a system service carries that service's marker (registered in pyproject.toml). Every test
that carries none of them, and is neither ``slow`` nor ``device``, gets the ``quick`` marker at collection, so
``python -m pytest -m quick`` runs exactly the tests that need no service.

The helpers that start a service (``sshlab.Sshd.start``, ``armlab.Arm64Device.start``, ``sdlab.SystemdDevice``,
``raylab.RayLab.start``, ``_pg.postgres_server``, the Chromium and Prometheus launchers) call
:func:`starting` first: inside a test that lacks the service's marker it raises :class:`UnmarkedServiceError`,
so a mis-marked test fails loudly instead of slipping a service into the quick tier. Outside a pytest test
(``benchmarks/`` scripts use the same labs) there is nothing to check.
"""

from __future__ import annotations

import pytest

#: marker -> what it starts (the text registered in pyproject.toml starts with this)
SERVICES: dict[str, str] = {
    "ssh": "real sshd processes on 127.0.0.x (tests/ssh/sshlab.py)",
    "arm64": "the emulated arm64 device: qemu-user, a chroot and its sshd (tests/arm64/armlab.py)",
    "systemd": "a Debian root booted with systemd as PID 1 and its sshd unit (tests/systemd/sdlab.py)",
    "ray": "a real Ray cluster in a network namespace (tests/ray/raylab.py)",
    "postgres": "a real PostgreSQL server (tests/_pg.py)",
    "browser": "headless Chromium (tests/test_report.py)",
    "prometheus": "Prometheus: promtool and a live server (tests/test_monitoring.py)",
}
#: markers that keep a test out of the quick tier besides the services
NOT_QUICK = ("slow", "device")
QUICK = "quick"

#: the markers of the test running now (set by tests/conftest.py around each test); None outside a test
_current: frozenset[str] | None = None


class UnmarkedServiceError(RuntimeError):
    """A test started a system service without carrying that service's marker."""


def is_quick(markers: set[str] | frozenset[str]) -> bool:
    return not (markers & (set(SERVICES) | set(NOT_QUICK)))


def set_current(markers: frozenset[str] | None) -> None:
    global _current
    _current = markers


def _markers(item: pytest.Item) -> frozenset[str]:
    return frozenset(m.name for m in item.iter_markers())


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: `-m quick` must see the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``quick``: every test that carries no service marker and is neither ``slow`` nor ``device``."""
    for item in items:
        if is_quick(_markers(item)):
            item.add_marker(QUICK)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """The running test's markers (its fixtures' setup and teardown included), for :func:`starting`."""
    set_current(_markers(item))
    try:
        yield
    finally:
        set_current(None)


def starting(service: str) -> None:
    """Call before starting ``service``: fails when the running test does not carry its marker."""
    if service not in SERVICES:
        raise ValueError(f"unknown service marker {service!r} (known: {', '.join(SERVICES)})")
    if _current is None or service in _current:
        return
    raise UnmarkedServiceError(
        f"this test starts {SERVICES[service]} but does not carry the {service!r} marker: add "
        f"`pytestmark = pytest.mark.{service}` (or @pytest.mark.{service}) so `pytest -m quick` leaves it out")


__all__ = ["NOT_QUICK", "QUICK", "SERVICES", "UnmarkedServiceError", "is_quick", "pytest_collection_modifyitems",
           "pytest_runtest_protocol", "set_current", "starting"]
