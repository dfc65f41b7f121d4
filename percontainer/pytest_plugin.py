"""pytest plugin (entry point `percontainer`): module-level per-container state, per test.

- The `container` fixture runs the test inside a fresh container and closes it afterwards
  (exit hooks run, values are dropped).
- `@pytest.mark.percontainer` on a test, class or module (`pytestmark`), or
  `percontainer_isolate = true` in the ini file for the whole suite, does the same for every
  test concerned without asking for the fixture: the test's container is entered before its
  setup and left after its teardown, so its function-scoped fixtures run inside it too, and
  nothing a test writes to a PerContainer is seen by the next. Fixtures of a wider scope
  (class, module, session) are set up and torn down in the host, so what they make outlives
  the test, and their teardown sees what their setup saw.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

from ._core import Container, current, host

__all__ = ["container"]

_KEY = pytest.StashKey[Container]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("percontainer_isolate", type="bool", default=False,
                  help="run every test inside a fresh percontainer Container")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "percontainer: run this test inside a fresh percontainer Container")


def _isolated(item: pytest.Item) -> bool:
    return bool(item.config.getini("percontainer_isolate")) or \
        item.get_closest_marker("percontainer") is not None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    if _isolated(item):
        fresh = Container(f"test:{item.nodeid}", parent=host)
        fresh.__enter__()  # left in pytest_runtest_teardown: setup, call, teardown inside
        item.stash[_KEY] = fresh
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item,
                            nextitem: pytest.Item | None) -> Generator[None, None, None]:
    isolating = item.stash.get(_KEY, None)
    try:
        return (yield)
    finally:
        if isolating is not None:
            del item.stash[_KEY]
            try:
                isolating.__exit__(None, None, None)
            finally:
                isolating.close()


class _InHost:
    """Runs a wider-scoped fixture's teardown in the host, where its setup ran.

    pytest tears such a fixture down during the last test's teardown (or during the next
    test's setup, when its parameter changes): inside that test's container under isolation.
    A fixture's finalizers run last in, first out, so enter() registered after its setup and
    leave() registered before it bracket every finalizer the setup registered.
    """

    __slots__ = ("entered",)

    def __init__(self) -> None:
        self.entered = False

    def enter(self) -> None:
        if current() is not host:
            host.__enter__()
            self.entered = True

    def leave(self) -> None:
        if self.entered:
            self.entered = False
            host.__exit__(None, None, None)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    """Set up and tear down fixtures of a wider scope than the test in the host, not in the
    test's container."""
    if fixturedef.scope == "function":
        return (yield)
    in_host = _InHost()
    request.addfinalizer(in_host.leave)  # runs after the fixture's own teardown
    try:
        if current() is host:
            return (yield)
        with host:
            return (yield)
    finally:
        request.addfinalizer(in_host.enter)  # runs before it, even when the setup failed


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A fresh container, current for the test, closed after it (under isolation: the
    test's own container)."""
    isolating = request.node.stash.get(_KEY, None)
    if isolating is not None:
        yield isolating
        return
    fresh = Container(f"fixture:{request.node.nodeid}", parent=host)
    try:
        with fresh:
            yield fresh
    finally:
        fresh.close()
