"""The pytest plugin: the `container` fixture, the `percontainer` marker, the ini switch.

Each case runs an inner pytest session in a subprocess (pytester.runpytest_subprocess): the
library's state is process-wide, so an in-process inner run would share it with this one.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import percontainer

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow  # every case starts a pytest session in a subprocess

ROOT = Path(__file__).resolve().parent.parent
enabled_only = pytest.mark.skipif(
    not percontainer.ENABLED, reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")


def plugin_args() -> list[str]:
    """`-p percontainer.pytest_plugin` unless the entry point already registers the plugin
    (passing -p then fails with 'Plugin already registered')."""
    installed = any(ep.name == "percontainer"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    return [] if installed else ["-p", "percontainer.pytest_plugin"]


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocess can import percontainer from this checkout."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return pytester


# pytest-asyncio, where installed, warns at start-up unless an ini option is set (which the
# inner sessions' own ini files do not): a later -W takes precedence over -W error.
ASYNCIO_UNSET = 'ignore:The configuration option "asyncio_default_fixture_loop_scope" is unset'


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider",
                                         "-W", "error", "-W", ASYNCIO_UNSET, *args)


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


HEADER = '''
import pytest
import percontainer
from percontainer import Container, PerContainer, current, host

LOG = {log!r}


def record(line):
    with open(LOG, "a") as file:
        file.write(line + "\\n")


value = PerContainer("inner.value", default="unset",
                     on_exit=lambda v: record(f"exit:{{current().name}}:{{v}}"))
'''


# -- the `container` fixture -------------------------------------------------------------------
@enabled_only
def test_container_fixture(inner: pytest.Pytester) -> None:
    log = inner.path / "log.txt"
    inner.makepyfile(test_fixture=HEADER.format(log=str(log)) + '''
seen = []


def test_one(container):
    assert isinstance(container, Container)
    assert current() is container and container is not host
    assert not container.closed
    assert container.name.startswith("fixture:")
    assert value.get() == "unset"
    value.set("one")
    seen.append(container)


def test_two(container):
    assert current() is container
    assert container is not seen[0]
    assert value.get() == "unset"  # what test_one set is gone
    value.set("two")
    seen.append(container)


def test_after():
    assert current() is host
    assert all(c.closed for c in seen)
    assert value.get() == "unset"  # the fixture's values never reached the host
    assert __import__("pathlib").Path(LOG).read_text().splitlines() == [
        "exit:fixture:test_fixture.py::test_one:one",
        "exit:fixture:test_fixture.py::test_two:two",
    ]
''')
    result = run(inner)
    result.assert_outcomes(passed=3)
    assert log_lines(log) == ["exit:fixture:test_fixture.py::test_one:one",
                              "exit:fixture:test_fixture.py::test_two:two"]


def test_container_fixture_is_closed_after_the_test(inner: pytest.Pytester) -> None:
    """Holds with PERCONTAINER_DISABLE=1 too: the fixture still makes and closes a container."""
    inner.makepyfile(test_closing='''
from percontainer import Container

seen = []


def test_one(container):
    assert isinstance(container, Container) and not container.closed
    seen.append(container)


def test_two():
    assert seen[0].closed
''')
    run(inner).assert_outcomes(passed=2)


# -- the marker ---------------------------------------------------------------------------------
@enabled_only
def test_marker_on_module_isolates_every_test(inner: pytest.Pytester) -> None:
    log = inner.path / "log.txt"
    inner.makepyfile(test_marked=HEADER.format(log=str(log)) + '''
pytestmark = pytest.mark.percontainer


@pytest.fixture
def prepared():
    here = current()
    assert here is not host  # fixture setup runs inside the test's container
    value.set("from fixture")
    yield here
    assert current() is here  # and so does its teardown
    record(f"teardown:{value.get()}")


def test_one(prepared):
    assert current() is prepared
    assert current().name == "test:test_marked.py::test_one"
    assert value.get() == "from fixture"
    value.set("one")


def test_two():
    assert current() is not host
    assert current().name == "test:test_marked.py::test_two"
    assert value.get() == "unset"
    value.set("two")


class TestInClass:
    def test_three(self):
        assert current() is not host and value.get() == "unset"
''')
    result = run(inner)
    result.assert_outcomes(passed=3)
    assert log_lines(log) == ["teardown:one",
                              "exit:test:test_marked.py::test_one:one",
                              "exit:test:test_marked.py::test_two:two"]


@enabled_only
def test_marker_on_one_test_or_class(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_some='''
import pytest
from percontainer import PerContainer, current, host

value = PerContainer("inner.value", default="unset")


def test_plain_first():
    assert current() is host
    value.set("host value")


@pytest.mark.percontainer
def test_marked():
    assert current() is not host
    assert value.get() == "unset"
    value.set("marked")


@pytest.mark.percontainer
class TestMarked:
    def test_a(self):
        assert current() is not host and value.get() == "unset"


def test_plain_after():
    assert current() is host
    assert value.get() == "host value"
''')
    run(inner).assert_outcomes(passed=4)


@enabled_only
@pytest.mark.parametrize("how", ["marker", "ini"])
def test_isolation_with_the_container_fixture(inner: pytest.Pytester, how: str) -> None:
    """An isolated test (marker or ini) that also asks for the `container` fixture: the fixture
    is the test's own container, current for the test; the tests after it are unaffected."""
    if how == "ini":
        inner.makeini("[pytest]\npercontainer_isolate = true\n")
        mark = ""
    else:
        mark = "pytestmark = pytest.mark.percontainer"
    inner.makepyfile(test_both=f'''
import pytest
from percontainer import PerContainer, current, host

{mark}
value = PerContainer("inner.value", default="unset")


def test_with_fixture(container):
    assert current() is container
    assert container.name == "test:test_both.py::test_with_fixture"  # the test's own
    assert container.parent is host
    value.set("set")


def test_next():
    assert current().name == "test:test_both.py::test_next"
    assert value.get() == "unset"
''')
    run(inner).assert_outcomes(passed=2)


def test_marker_is_registered(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_strict='''
import pytest


@pytest.mark.percontainer
def test_marked():
    pass
''')
    run(inner, "--strict-markers").assert_outcomes(passed=1)
    result = run(inner, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.percontainer:*"])


# -- the ini switch -----------------------------------------------------------------------------
@enabled_only
def test_ini_isolates_the_whole_suite(inner: pytest.Pytester) -> None:
    log = inner.path / "log.txt"
    inner.makeini("[pytest]\npercontainer_isolate = true\n")
    header = HEADER.format(log=str(log))
    inner.makepyfile(
        test_first=header + '''
@pytest.fixture
def prepared():
    assert current() is not host
    value.set("fixture")
    yield
    assert value.get() == "first"
    record("teardown")


def test_first(prepared):
    assert current().name == "test:test_first.py::test_first"
    assert value.get() == "fixture"
    value.set("first")


def test_second():
    assert current().name == "test:test_first.py::test_second"
    assert value.get() == "unset"
''',
        test_other='''
from percontainer import PerContainer, current, host

value = PerContainer("inner.other", default="unset")  # inner.value would redeclare test_first's


def test_third():
    assert current() is not host
    assert value.get() == "unset"
    value.set("third")
''')
    result = run(inner, "--strict-config")
    result.assert_outcomes(passed=3)
    assert log_lines(log) == ["teardown", "exit:test:test_first.py::test_first:first"]


def test_ini_false_shares_the_host(inner: pytest.Pytester) -> None:
    inner.makeini("[pytest]\npercontainer_isolate = false\n")
    inner.makepyfile(test_shared='''
from percontainer import PerContainer, current, host

value = PerContainer("inner.value", default="unset")


def test_one():
    assert current() is host
    value.set("one")


def test_two():
    assert value.get() == "one"
''')
    run(inner, "--strict-config").assert_outcomes(passed=2)


@enabled_only
def test_ini_isolation_and_session_fixtures(inner: pytest.Pytester) -> None:
    """A session-scoped fixture is set up once, during the first test's setup. Under
    percontainer_isolate it must still serve every test: a Container or TenantRegistry it
    makes must not be a child of the first test's container (closed when that test ends)."""
    inner.makeini("[pytest]\npercontainer_isolate = true\n")
    inner.makepyfile(test_session='''
import pytest
from percontainer import Container, current, host
from percontainer.registry import TenantRegistry


@pytest.fixture(scope="session")
def shared():
    container = Container("shared")
    yield container
    container.close()


@pytest.fixture(scope="session")
def registry():
    reg = TenantRegistry()
    yield reg
    reg.close()


def test_one(shared, registry):
    assert not shared.closed
    assert registry.get("x").name == "x"


def test_two(shared, registry):
    assert not shared.closed  # got: closed with test_one's container, its parent
    assert registry.get("y").name == "y"  # got: ContainerClosedError (closed parent)
''')
    run(inner).assert_outcomes(passed=2)


# -- without the marker or ini: nothing changes --------------------------------------------------
def test_without_marker_tests_share_the_host(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_plain='''
from percontainer import PerContainer, current, host

value = PerContainer("inner.value", default="unset")


def test_one():
    assert current() is host
    value.set("one")


def test_two():
    assert current() is host
    assert value.get() == "one"
''')
    run(inner).assert_outcomes(passed=2)


def test_failures_inside_an_isolated_test_are_reported(inner: pytest.Pytester) -> None:
    """A failing or erroring isolated test fails normally, and the next test is unaffected."""
    inner.makeini("[pytest]\npercontainer_isolate = true\n")
    inner.makepyfile(test_failing='''
import pytest
from percontainer import current, host


@pytest.fixture
def broken():
    raise RuntimeError("setup failed")


def test_fails():
    assert False, "expected failure"


def test_errors(broken):
    pass


@pytest.mark.skip(reason="skipped")
def test_skipped():
    pass


def test_after():
    assert current() is not host or not __import__("percontainer").ENABLED
''')
    result = run(inner)
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1)
