"""pytest plugin (entry point `percontainer`): module-level per-container state, per test.

- The `container` fixture runs the test inside a fresh container and closes it afterwards
  (exit hooks run, values are dropped).
- `@pytest.mark.percontainer` on a test, class or module (`pytestmark`), or
  `percontainer_isolate = true` in the ini file for the whole suite, does the same for every
  test concerned without asking for the fixture: setup, call and teardown all run inside the
  test's own container, so nothing a test writes to a PerContainer is seen by the next.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from ._core import Container

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
    if not _isolated(item):
        return (yield)
    container = Container(f"test:{item.nodeid}")
    item.stash[_KEY] = container
    with container:
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    container = item.stash.get(_KEY, None)
    if container is None:
        return (yield)
    with container:
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    container = item.stash.get(_KEY, None)
    if container is None:
        return (yield)
    try:
        with container:
            return (yield)
    finally:
        del item.stash[_KEY]
        container.close()


@pytest.fixture
def container(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A fresh container, current for the test, closed after it."""
    fresh = Container(f"fixture:{request.node.nodeid}")
    try:
        with fresh:
            yield fresh
    finally:
        fresh.close()
