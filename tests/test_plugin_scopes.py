"""The pytest plugin and fixture scopes: a fixture's teardown runs where its setup ran.

Fixtures of a wider scope than the test (class, module, session) are set up in the host, also
under isolation (`percontainer_isolate`, the marker); their teardown, which pytest runs during
the last test's teardown (or during the next test's setup when a parametrized fixture changes
its parameter), must run in the host too, never in the test's container.

Each case runs an inner pytest session in a subprocess, once per core (the plugin imports the
core through percontainer._core, which PERCONTAINER_NO_EXTENSIONS switches).
"""

from __future__ import annotations

import importlib.util

import pytest
from test_pytest_plugin import ROOT, log_lines, run

from percontainer import _config

pytest_plugins = ["pytester"]

pytestmark = [
    pytest.mark.skipif(_config.DISABLED,
                       reason="asserts where fixtures run; PERCONTAINER_DISABLE=1 is set"),
    pytest.mark.slow,  # every case starts a pytest session in a subprocess
]

# The inner session checks that it runs the core it was asked for.
INNER_CONFTEST = '''
import os
import percontainer


def pytest_configure(config):
    expected = os.environ["EXPECTED_CORE"]
    assert percontainer.IMPLEMENTATION == expected, (percontainer.IMPLEMENTATION, expected)
'''

HEADER = '''
import pytest
from percontainer import Container, PerContainer, current, host

LOG = {log!r}


def record(line):
    with open(LOG, "a") as file:
        file.write(line + "\\n")


def where():
    return "host" if current() is host else current().name


value = PerContainer("inner.value", default="unset")
'''


@pytest.fixture(params=["c", "py"])
def inner(request: pytest.FixtureRequest, pytester: pytest.Pytester,
          monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocess imports percontainer from this checkout, with one core."""
    if request.param == "c" and _config.NO_EXTENSIONS:
        pytest.skip("PERCONTAINER_NO_EXTENSIONS is set: the compiled core is not under test")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    if request.param == "py":
        monkeypatch.setenv("PERCONTAINER_NO_EXTENSIONS", "1")
        monkeypatch.setenv("EXPECTED_CORE", "python")
    else:
        monkeypatch.delenv("PERCONTAINER_NO_EXTENSIONS", raising=False)
        monkeypatch.setenv("EXPECTED_CORE", "cython")
    pytester.makeconftest(INNER_CONFTEST)
    return pytester


WIDE_FIXTURES = '''
@pytest.fixture(scope="session")
def session_wide():
    record(f"setup session in {where()}")
    made = Container("made by session")  # a child of the host: it outlives every test
    yield made
    record(f"teardown session in {where()}, made closed: {made.closed}")
    made.close()


@pytest.fixture(scope="module")
def module_wide():
    record(f"setup module in {where()}")
    value.set("module")  # the host's value
    yield
    record(f"teardown module in {where()}, value {value.get()}")


@pytest.fixture(scope="class")
def class_wide():
    record(f"setup class in {where()}")
    yield
    record(f"teardown class in {where()}")


@pytest.fixture
def function_wide():
    record(f"setup function in {where()}")
    yield
    record(f"teardown function in {where()}")
'''


@pytest.mark.parametrize("how", ["ini", "marker"])
def test_wider_fixtures_tear_down_in_the_host(inner: pytest.Pytester, how: str) -> None:
    """Under isolation, class, module and session fixtures are set up and torn down in the
    host; function fixtures in the test's container, both ways."""
    log = inner.path / "log.txt"
    if how == "ini":
        inner.makeini("[pytest]\npercontainer_isolate = true\n")
        mark = ""
    else:
        mark = "pytestmark = pytest.mark.percontainer"
    inner.makepyfile(test_scopes=HEADER.format(log=str(log)) + mark + WIDE_FIXTURES + '''

class TestScoped:
    def test_one(self, session_wide, module_wide, class_wide, function_wide):
        assert current().name == "test:test_scopes.py::TestScoped::test_one"
        assert value.get() == "unset"  # the host's value stays in the host

    def test_two(self, session_wide, module_wide, class_wide, function_wide):
        value.set("two")  # the test's own value, never seen by the teardown of wider fixtures


def test_last(session_wide, module_wide, function_wide):
    value.set("last")
''')
    run(inner).assert_outcomes(passed=3)
    one = "test:test_scopes.py::TestScoped::test_one"
    two = "test:test_scopes.py::TestScoped::test_two"
    last = "test:test_scopes.py::test_last"
    assert log_lines(log) == [
        "setup session in host",
        "setup module in host",
        "setup class in host",
        f"setup function in {one}",
        f"teardown function in {one}",
        f"setup function in {two}",
        f"teardown function in {two}",
        "teardown class in host",  # got: in test_two's container
        f"setup function in {last}",
        f"teardown function in {last}",
        "teardown module in host, value module",  # got: in test_last's, value 'last'
        "teardown session in host, made closed: False",
    ]


def test_parametrized_wider_fixture_tears_down_in_the_host(inner: pytest.Pytester) -> None:
    """A module fixture whose parameter changes is torn down during the next test's setup,
    inside that test's container: its teardown must still run in the host."""
    log = inner.path / "log.txt"
    inner.makeini("[pytest]\npercontainer_isolate = true\n")
    inner.makepyfile(test_params=HEADER.format(log=str(log)) + '''

@pytest.fixture(scope="module", params=[1, 2])
def numbered(request):
    record(f"setup {request.param} in {where()}")
    yield request.param
    record(f"teardown {request.param} in {where()}")


def test_a(numbered):
    value.set(numbered)


def test_b(numbered):
    assert value.get() == "unset"
''')
    run(inner).assert_outcomes(passed=4)
    assert log_lines(log) == ["setup 1 in host", "teardown 1 in host",
                              "setup 2 in host", "teardown 2 in host"]


def test_wider_fixture_failing_teardown_leaves_the_container_stack_alone(
        inner: pytest.Pytester) -> None:
    """A module fixture whose setup or teardown fails is reported, and the tests after it
    run where they should (the test's container under isolation, else the host)."""
    log = inner.path / "log.txt"
    inner.makeini("[pytest]\npercontainer_isolate = true\n")
    inner.makepyfile(
        test_a_failing=HEADER.format(log=str(log)) + '''

@pytest.fixture(scope="module")
def broken_teardown():
    yield
    record(f"teardown in {where()}")
    raise RuntimeError("teardown failed")


@pytest.fixture(scope="module")
def broken_setup():
    record(f"setup in {where()}")
    raise RuntimeError("setup failed")


def test_one(broken_teardown):
    pass


def test_two(broken_setup):
    pass
''',
        test_b_after='''
from percontainer import current, host


def test_after():
    assert current().name == "test:test_b_after.py::test_after"
    assert current().parent is host
''')
    result = run(inner)
    # test_two errors twice: its setup fails, and the module's teardown fails after it
    result.assert_outcomes(passed=2, errors=2)
    assert log_lines(log) == ["setup in host", "teardown in host"]


def test_without_isolation_wider_fixtures_stay_in_the_host(inner: pytest.Pytester) -> None:
    """With the `container` fixture (no isolation), a module fixture that a test asks for
    inside its container (getfixturevalue) is set up and torn down in the host."""
    log = inner.path / "log.txt"
    inner.makepyfile(test_plain=HEADER.format(log=str(log)) + WIDE_FIXTURES + '''

def test_one(container, request):
    request.getfixturevalue("module_wide")  # set up lazily, while the container is current
    assert current() is container
    assert value.get() == "unset"


def test_two():
    assert current() is host
    assert value.get() == "module"
''')
    run(inner).assert_outcomes(passed=2)
    assert log_lines(log) == ["setup module in host", "teardown module in host, value module"]


GENERATOR_FIXTURE = '''

@pytest_asyncio.fixture(loop_scope="module")
async def acme():
    container = registry.enter("acme")
    try:
        yield container
    finally:
        registry.leave("acme", container)


'''

COROUTINE_FIXTURE = '''

@pytest_asyncio.fixture(loop_scope="module")
async def acme():
    return registry.enter("acme")


'''


@pytest.mark.skipif(importlib.util.find_spec("pytest_asyncio") is None,
                    reason="pytest-asyncio is not installed")
@pytest.mark.parametrize("test_kind", ["sync", "async"])
@pytest.mark.parametrize("fixture_kind", ["coroutine", "generator"])
def test_async_fixture_entering_a_tenant(inner: pytest.Pytester, fixture_kind: str,
                                         test_kind: str) -> None:
    """Issue 9, defect 1 seen from the plugin's side: pytest-asyncio copies an async fixture's
    context changes into the test with ContextVar.set() and undoes them with reset() at
    teardown (a coroutine fixture never leaves: pytest-asyncio's reset is its only undoing);
    the test runs in the tenant, the tests after it in the host."""
    inner.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    header = "@pytest.mark.asyncio(loop_scope='module')\nasync " if test_kind == "async" else ""
    fixture = COROUTINE_FIXTURE if fixture_kind == "coroutine" else GENERATOR_FIXTURE
    inner.makepyfile(test_tenant='''
import pytest
import pytest_asyncio
from percontainer import PerContainer, current, host
from percontainer.registry import TenantRegistry

registry = TenantRegistry()
value = PerContainer("inner.value", default="unset")

''' + fixture + header + '''def test_in_tenant(acme):
    assert current() is acme and acme.name == "acme"
    value.set("acme's")


def test_after():
    assert current() is host  # got (compiled core): acme
    assert value.get() == "unset"


@pytest.mark.asyncio(loop_scope="module")
async def test_async_after():
    assert current() is host
    assert value.get() == "unset"
''')
    run(inner).assert_outcomes(passed=3)
