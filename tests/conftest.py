"""One fixture, `pc`, runs every semantic test against both twins (ids "c" and "py")."""

from __future__ import annotations

import gc
import importlib
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from percontainer import _config

# PERCONTAINER_TEST_TWINS=c: the compiled core's cases only (.ci/versions, on the versions that
# .ci/run does not test in full: the twin is the same code on every version).
TWINS = [twin for twin in os.environ.get("PERCONTAINER_TEST_TWINS", "c,py").split(",") if twin]
if not TWINS or not set(TWINS) <= {"c", "py"}:
    raise pytest.UsageError(f"PERCONTAINER_TEST_TWINS={os.environ['PERCONTAINER_TEST_TWINS']!r}: "
                            "give c, py or c,py")


def _import_twin(twin: str) -> ModuleType:
    if twin == "py":
        return importlib.import_module("percontainer._core_py")
    if _config.NO_EXTENSIONS:
        pytest.skip("PERCONTAINER_NO_EXTENSIONS is set: the compiled core is not under test")
    # Without NO_EXTENSIONS the compiled core must be there: a missing build is a failure.
    return importlib.import_module("percontainer._core_c")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the README doctest in disabled mode (it shows tenants isolated from each other),
    and tests marked c_extension where the compiled core is not under test."""
    readme = pytest.mark.skip(reason="README shows isolation; PERCONTAINER_DISABLE=1 is set")
    compiled = pytest.mark.skip(reason="PERCONTAINER_NO_EXTENSIONS is set")
    for item in items:
        if _config.DISABLED and item.path.name == "README.md":
            item.add_marker(readme)
        if _config.NO_EXTENSIONS and item.get_closest_marker("c_extension"):
            item.add_marker(compiled)


def _assert_nothing_left(module: ModuleType, before: set[Any]) -> None:
    """Fail if the test left a container entered or open (closing the open ones first)."""
    assert module.current() is module.host, "a test left a container entered"
    leftover = [c for c in module.containers() if c not in before]
    for container in leftover:
        container.close()
    assert not leftover, f"a test left containers open: {leftover}"


@pytest.fixture(params=TWINS)
def pc(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The core module under test; fails the test if it leaves a container open."""
    module = _import_twin(request.param)
    if request.node.get_closest_marker("enabled_only") and not module.ENABLED:
        pytest.skip("asserts isolation between containers; PERCONTAINER_DISABLE=1 is set")
    if request.node.get_closest_marker("disabled_only") and module.ENABLED:
        pytest.skip("asserts the disabled mode; run with PERCONTAINER_DISABLE=1")
    before = set(module.containers())
    yield module
    gc.collect()
    _assert_nothing_left(module, before)


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A variable name unique to this test (names are process-wide identities)."""
    return f"tests.{request.node.name}"


@pytest.fixture
def new(pc: ModuleType) -> Iterator[Callable[..., Any]]:
    """`new(...)` is `pc.Container(...)`, closed at teardown if the test did not close it."""
    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        container = pc.Container(*args, **kwargs)
        made.append(container)
        return container

    yield make
    for container in reversed(made):
        if not container.closed:
            container.close()


@pytest.fixture
def no_leftover_containers() -> Iterator[None]:
    """For tests of the top-level package: fail if a test leaves a container open or entered."""
    import percontainer

    before = set(percontainer.containers())
    yield
    _assert_nothing_left(percontainer, before)


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    """`make(...)` is TenantRegistry(...), closed at teardown."""
    from percontainer.registry import TenantRegistry

    made: list[TenantRegistry] = []

    def factory(**kwargs: Any) -> TenantRegistry:
        registry = TenantRegistry(**kwargs)
        made.append(registry)
        return registry

    yield factory
    for registry in made:
        registry.close()
