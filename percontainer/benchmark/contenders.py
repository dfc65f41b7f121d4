"""The contenders: percontainer and every way Python code keeps per-tenant state without it.

Each contender answers the same operations on one tenant's state (a counter among FIELDS
variables): read, write, increment, switch (make another tenant current and come back),
create (a tenant's state, made and dropped), sum (one counter over every tenant) and memory
(bytes per tenant holding FIELDS values). An operation a contender cannot express raises
NotApplicable with the reason, shown in the table instead of a figure.
"""

from __future__ import annotations

import contextvars
import importlib
import threading
from types import ModuleType
from typing import Any

from .timing import Case, traced_bytes

__all__ = ["FIELDS", "OPERATIONS", "Contender", "NotApplicable", "all_contenders", "struct_class"]

FIELDS = 20  # variables in a tenant's state, as in the core's memory goal
OPERATIONS = ("read", "write", "increment", "switch", "create", "sum", "memory")


class NotApplicable(Exception):
    """The contender has no way to do this operation; the message says why."""


def struct_class(fields: int = FIELDS) -> type:
    """Return a `__slots__` class with `fields` fields f0.. set to 0: globals in a struct."""
    names = tuple(f"f{i}" for i in range(fields))
    body = "\n".join(f"        self.{name} = 0" for name in names)
    source = f"class Tenant:\n    __slots__ = {names!r}\n    def __init__(self):\n{body}\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102  # a struct with N fields, written out as a person would
    return namespace["Tenant"]  # type: ignore[no-any-return]  # the class exec just made


class Contender:
    """Base: every operation is not applicable until a subclass says how."""

    name = "?"

    def unavailable(self) -> str | None:
        """Return why this contender cannot run here, or None."""
        return None

    def case(self, operation: str, tenants: int) -> Case:
        """Return the timed case for an operation (tenants: how many for `sum`)."""
        method = getattr(self, operation, None)
        if method is None:
            raise NotApplicable(self.why(operation))
        return method(tenants) if operation == "sum" else method()  # type: ignore[no-any-return]

    def why(self, operation: str) -> str:
        return "not applicable"

    def memory_per_tenant(self, tenants: int, values: list[Any]) -> float:
        raise NotApplicable(self.why("memory"))


class PerContainerContender(Contender):
    """percontainer: a PerContainer variable read through the current container."""

    def __init__(self, name: str, module_name: str) -> None:
        self.name = name
        self.module_name = module_name
        self._module: ModuleType | None = None

    @property
    def pc(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module

    def unavailable(self) -> str | None:
        try:
            self.pc  # noqa: B018  # importing is the check
        except ImportError as error:
            return f"not importable here ({error})"
        return None

    def _variables(self) -> list[Any]:
        return [self.pc.PerContainer(f"percontainer.bench.{self.name}.f{i}", default=0)
                for i in range(FIELDS)]

    def _op(self, stmt: str) -> Case:
        """Time stmt inside a container where v (the first of FIELDS variables) is set."""
        variables = self._variables()
        container = self.pc.Container("bench")
        container.run(variables[0].set, 1)
        return Case(stmt, {"v": variables[0], "keep": variables}, around=container.run,
                    cleanup=container.close)

    def read(self) -> Case:
        return self._op("v.get()")

    def write(self) -> Case:
        return self._op("v.set(1)")

    def increment(self) -> Case:
        return self._op("v.add(1)")

    def switch(self) -> Case:
        container = self.pc.Container("bench")
        return Case("with c: pass", {"c": container}, cleanup=container.close)

    def create(self) -> Case:
        return Case("Container().close()",
                    {"Container": self.pc.Container, "keep": self._variables()})

    def sum(self, tenants: int) -> Case:
        variables = self._variables()
        made = [self.pc.Container() for _ in range(tenants)]
        for container in made:
            container.run(variables[0].set, 1)

        def cleanup() -> None:
            for container in made:
                container.close()

        return Case("v.sum()", {"v": variables[0], "keep": variables}, cleanup=cleanup)

    def memory_per_tenant(self, tenants: int, values: list[Any]) -> float:
        variables = self._variables()

        def build() -> list[Any]:
            made = []
            for _ in range(tenants):
                container = self.pc.Container()
                with container:
                    for variable, value in zip(variables, values):
                        variable.set(value)
                made.append(container)
            return made

        used, made = traced_bytes(build)
        for container in made:
            container.close()
        return used / tenants


class StructContender(Contender):
    """Globals in structs: one `__slots__` object per tenant, found through a ContextVar
    (`via="contextvar"`) or a threading.local (`via="threading.local"`)."""

    def __init__(self, via: str) -> None:
        self.via = via
        self.name = f"globals-in-structs ({via})"
        self.cls = struct_class()

    def _env(self) -> tuple[str, dict[str, Any], Any]:
        """Return the expression that finds the current tenant, its env, and a cleanup."""
        tenant = self.cls()
        if self.via == "contextvar":
            cur: contextvars.ContextVar[Any] = contextvars.ContextVar("bench.tenant")
            token = cur.set(tenant)
            return "cur.get()", {"cur": cur, "other": self.cls()}, lambda: cur.reset(token)
        local = threading.local()
        local.tenant = tenant
        return "tl.tenant", {"tl": local, "other": self.cls()}, None

    def _op(self, template: str) -> Case:
        find, env, cleanup = self._env()
        return Case(template.format(find), env, cleanup=cleanup)

    def read(self) -> Case:
        return self._op("{}.f0")

    def write(self) -> Case:
        return self._op("{}.f0 = 1")

    def increment(self) -> Case:
        return self._op("{}.f0 += 1")

    def switch(self) -> Case:
        if self.via == "contextvar":
            return self._op("tok = cur.set(other); cur.reset(tok)")
        return self._op("old = tl.tenant; tl.tenant = other; tl.tenant = old")

    def create(self) -> Case:
        return Case("Tenant()", {"Tenant": self.cls})

    def sum(self, tenants: int) -> Case:
        return Case("sum(t.f0 for t in tenants)", {"tenants": [self.cls() for _ in range(tenants)]})

    def memory_per_tenant(self, tenants: int, values: list[Any]) -> float:
        def build() -> list[Any]:
            made = []
            for _ in range(tenants):
                tenant = self.cls()
                for i, value in enumerate(values):
                    setattr(tenant, f"f{i}", value)
                made.append(tenant)
            return made

        return traced_bytes(build)[0] / tenants


class ContextVarContender(Contender):
    """contextvars: one ContextVar per variable; a tenant is a Context."""

    name = "contextvars.ContextVar"

    def _var(self) -> contextvars.ContextVar[int]:
        var: contextvars.ContextVar[int] = contextvars.ContextVar("bench.var")
        return var

    def _op(self, stmt: str) -> Case:
        var = self._var()
        token = var.set(0)
        return Case(stmt, {"cv": var}, cleanup=lambda: var.reset(token))

    def read(self) -> Case:
        return self._op("cv.get()")

    def write(self) -> Case:
        return self._op("cv.set(1)")

    def increment(self) -> Case:
        return self._op("cv.set(cv.get() + 1)")

    def switch(self) -> Case:
        return Case("ctx.run(noop)", {"ctx": contextvars.Context(), "noop": _noop})

    def create(self) -> Case:
        return Case("Context()", {"Context": contextvars.Context})

    def why(self, operation: str) -> str:
        return "a Context cannot be enumerated from outside: no sum over tenants"

    def memory_per_tenant(self, tenants: int, values: list[Any]) -> float:
        variables: list[contextvars.ContextVar[Any]] = [
            contextvars.ContextVar(f"bench.f{i}") for i in range(FIELDS)]

        def fill() -> None:
            for variable, value in zip(variables, values):
                variable.set(value)

        def build() -> list[Any]:
            made = []
            for _ in range(tenants):
                context = contextvars.Context()
                context.run(fill)
                made.append(context)
            return made

        return traced_bytes(build)[0] / tenants


def _noop() -> None:
    return None


class AttributeContender(Contender):
    """An object whose attribute is per thread or per context: threading.local, werkzeug's
    Local, asgiref's Local. A tenant is a thread or a context: no handle to switch to,
    create, or enumerate."""

    def __init__(self, name: str, make: str, reason: str) -> None:
        self.name = name
        self.make = make  # "module:attribute" of the class
        self.reason = reason

    def _cls(self) -> Any:
        module_name, attribute = self.make.split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def unavailable(self) -> str | None:
        try:
            self._cls()
        except ImportError:
            package = self.make.split(".")[0].split(":")[0]
            return f"{package} is not installed (pip install 'percontainer[bench]')"
        return None

    def _op(self, stmt: str) -> Case:
        local = self._cls()()
        local.x = 0
        return Case(stmt, {"loc": local})

    def read(self) -> Case:
        return self._op("loc.x")

    def write(self) -> Case:
        return self._op("loc.x = 1")

    def increment(self) -> Case:
        return self._op("loc.x += 1")

    def why(self, operation: str) -> str:
        return self.reason


class GlobalContender(Contender):
    """A plain module global: one copy for everyone, the physical floor."""

    name = "module global (floor)"

    def _op(self, stmt: str) -> Case:
        return Case(stmt, {"G": 0}, setup="global G")

    def read(self) -> Case:
        return self._op("G")

    def write(self) -> Case:
        return self._op("G = 1")

    def increment(self) -> Case:
        return self._op("G += 1")

    def why(self, operation: str) -> str:
        return "one copy for everyone: there are no tenants"


def all_contenders() -> list[Contender]:
    """Return every contender, percontainer's first (the compiled core is the reference)."""
    return [
        PerContainerContender("percontainer", "percontainer._core_c"),
        PerContainerContender("percontainer (pure-Python twin)", "percontainer._core_py"),
        StructContender("contextvar"),
        StructContender("threading.local"),
        ContextVarContender(),
        AttributeContender("threading.local", "threading:local",
                           "a thread is the tenant: no tenant to switch to, make or sum"),
        AttributeContender("werkzeug.local.Local", "werkzeug.local:Local",
                           "state per context: no tenant to switch to, make or sum"),
        AttributeContender("asgiref.local.Local", "asgiref.local:Local",
                           "state per context or thread: no tenant to switch to, make or sum"),
        GlobalContender(),
    ]
