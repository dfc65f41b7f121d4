"""pytest-benchmark suite: every contender, every operation, and the scaling sweeps.

Run:  pytest bench --benchmark-only        (groups: one per operation and sweep point)
The contenders and their statements are those of `python -m percontainer bench`
(percontainer/benchmark/contenders.py). Run again with PERCONTAINER_DISABLE=1 for the
disabled mode. A contender that is not installed, or that cannot express an operation, is
skipped with the reason.
"""

from __future__ import annotations

import contextvars
import importlib
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from percontainer.benchmark import FIELDS, OPERATIONS, Case, Contender, NotApplicable
from percontainer.benchmark import all_contenders
from percontainer.benchmark.contenders import struct_class

CONTENDERS = all_contenders()
TENANTS = 1_000  # for `sum` and `memory`: enough to show the per-tenant cost


def compile_case(case: Case) -> Callable[[], Any]:
    """Return the case's statement as a function of no arguments, in the case's namespace."""
    namespace = dict(case.env)
    body = textwrap.indent(case.stmt, "    ")
    exec(f"def op():\n    {case.setup}\n{body}\n", namespace)  # noqa: S102  # the case's own code
    return namespace["op"]  # type: ignore[no-any-return]  # the function exec just made


def prepared(contender: Contender, operation: str) -> Case:
    reason = contender.unavailable()
    if reason is not None:
        pytest.skip(reason)
    try:
        return contender.case(operation, TENANTS)
    except NotApplicable as reason:
        pytest.skip(str(reason))


@pytest.mark.parametrize("contender", CONTENDERS, ids=lambda contender: contender.name)
@pytest.mark.parametrize("operation", [op for op in OPERATIONS if op != "memory"])
def test_operation(benchmark: Any, operation: str, contender: Contender) -> None:
    benchmark.group = operation if operation != "sum" else f"sum over {TENANTS:,} tenants"
    case = prepared(contender, operation)
    op = compile_case(case)
    try:
        if case.around is None:
            benchmark(op)
        else:
            case.around(lambda: benchmark(op))
    finally:
        if case.cleanup is not None:
            case.cleanup()


@pytest.mark.parametrize("contender", CONTENDERS, ids=lambda contender: contender.name)
def test_memory_per_tenant(benchmark: Any, contender: Contender) -> None:
    """Times building TENANTS tenants; the bytes per tenant are in extra_info."""
    benchmark.group = "memory per tenant (time to build them; bytes in extra_info)"
    reason = contender.unavailable()
    if reason is not None:
        pytest.skip(reason)
    values = [object() for _ in range(FIELDS)]
    try:
        per_tenant = benchmark.pedantic(contender.memory_per_tenant, args=(TENANTS, values),
                                        rounds=3, iterations=1)
    except NotApplicable as reason:
        pytest.skip(str(reason))
    benchmark.extra_info["bytes_per_tenant"] = per_tenant
    assert per_tenant > 0


def core() -> Any:
    name = "percontainer._core_c"
    try:
        return importlib.import_module(name)
    except ImportError:
        return importlib.import_module("percontainer._core_py")


@pytest.mark.parametrize("containers", [1, 100, 10_000])
@pytest.mark.parametrize("contender", ["percontainer", "globals-in-structs"])
def test_read_vs_live_containers(benchmark: Any, contender: str, containers: int) -> None:
    """Reading every tenant's copy once, while `containers` tenants are live."""
    benchmark.group = f"read each of {containers:,} live tenants"
    pc = core()
    if contender == "percontainer":
        var = pc.PerContainer("percontainer.bench.suite.sweep", default=0)
        made = [pc.Container() for _ in range(containers)]
        for container in made:
            container.run(var.set, 1)
        try:
            benchmark(lambda: [var.of(c) for c in made])
        finally:
            for container in made:
                container.close()
    else:
        tenants = [struct_class()() for _ in range(containers)]
        benchmark(lambda: [t.f0 for t in tenants])


@pytest.mark.parametrize("containers", [1, 100, 10_000])
@pytest.mark.parametrize("contender", ["percontainer", "globals-in-structs"])
def test_switch_vs_live_containers(benchmark: Any, contender: str, containers: int) -> None:
    """Entering and leaving every tenant once, while `containers` tenants are live."""
    benchmark.group = f"switch into each of {containers:,} live tenants"
    pc = core()
    if contender == "percontainer":
        made = [pc.Container() for _ in range(containers)]

        def switch_all() -> None:
            for container in made:
                with container:
                    pass

        try:
            benchmark(switch_all)
        finally:
            for container in made:
                container.close()
    else:
        tenants = [struct_class()() for _ in range(containers)]
        current: contextvars.ContextVar[Any] = contextvars.ContextVar("bench.suite")

        def switch_structs() -> None:
            for tenant in tenants:
                token = current.set(tenant)
                current.reset(token)

        benchmark(switch_structs)


@pytest.mark.parametrize("declared", [1, 1_000])
def test_read_vs_declared_variables(benchmark: Any, declared: int) -> None:
    """Reading the last-declared variable while `declared` variables exist."""
    benchmark.group = "read vs declared variables"
    pc = core()
    variables = [pc.PerContainer(f"percontainer.bench.suite.declared.{i}", default=0)
                 for i in range(declared)]
    container = pc.Container()
    container.run(variables[-1].set, 1)
    try:
        container.run(benchmark, variables[-1].get)
    finally:
        container.close()


@pytest.mark.parametrize("shared", [False, True], ids=["share-none", "share-all"])
def test_clone_bits_create(benchmark: Any, shared: bool) -> None:
    """Creating a child that shares every group with its parent, or none."""
    benchmark.group = "clone bits: create a child"
    pc = core()
    groups = frozenset(f"percontainer.bench.suite.group{i}" for i in range(8))
    keep = [pc.PerContainer(f"{group}.var", default=0, group=group) for group in groups]
    parent = pc.Container()
    share = groups if shared else ()
    try:
        benchmark(lambda: pc.Container(parent=parent, share=share).close())
    finally:
        parent.close()
    del keep
