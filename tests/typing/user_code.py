"""User code written as README shows it, with the types checkers must infer for it.

Only type-checked, never run: `.ci/typing` runs mypy --strict and pyright on this file (pytest
does not collect it). `assert_type` fails unless a checker infers exactly that type. A line
with `# type: ignore[code]` holds code both checkers must reject: an unused ignore is an
error in both (mypy's warn_unused_ignores, pyright's reportUnnecessaryTypeIgnoreComment), so an
overload that accepts bad code fails the check as surely as one that infers a wrong type.
"""

from __future__ import annotations

from typing import Any, assert_type

import numpy as np
import numpy.typing as npt

from percontainer import (
    ENABLED, IMPLEMENTATION, Container, ContainerClosedError, ContainerError, PerContainer,
    containers, current, host, per_container, wrap,
)


class Conn:
    """A resource a variable holds per tenant, closed by its exit hook."""

    def close(self) -> None:
        """Close the connection."""


# -- object variables: PerContainer(name, default=..., factory=..., group=, on_exit=) -----------
hits = PerContainer("user_code.hits", default=0)
assert_type(hits, PerContainer[int])
assert_type(hits.get(), int)
assert_type(hits.value, int)
assert_type(hits.add(), int)
assert_type(hits.add(2), int)
assert_type(hits.of(host), int)
assert_type(hits.items(), list[tuple[Container, int]])
assert_type(hits.sum(), int)
assert_type(hits.name, str)
assert_type(hits.group, str)
assert_type(hits.dtype, np.dtype[Any] | None)
assert_type(hits.shape, tuple[int, ...])
hits.set(3)
hits.value = 4
hits.reset()
hits.set("three")  # type: ignore[arg-type]  # an int variable takes ints
hits.value = None  # type: ignore[assignment]  # and so does its value property
hits.of("acme")  # type: ignore[arg-type]  # of() takes a Container, not a name

names = PerContainer("user_code.names", factory=list[str], group="net")
assert_type(names, PerContainer[list[str]])
assert_type(names.get(), list[str])

sessions: PerContainer[dict[str, int]] = PerContainer("user_code.sessions", factory=dict)
assert_type(sessions.get(), dict[str, int])

# Neither default nor factory (get() raises LookupError until set): the annotation says what.
label: PerContainer[str] = PerContainer("user_code.label")
assert_type(label.get(), str)

conns = PerContainer("user_code.conns", factory=Conn, on_exit=Conn.close)
assert_type(conns, PerContainer[Conn])
ratio = PerContainer("user_code.ratio", default=0.5, group="net", on_exit=print)
assert_type(ratio, PerContainer[float])
explicit = PerContainer[int]("user_code.explicit", default=0)
assert_type(explicit, PerContainer[int])

# Rejected: default and factory together; a hook that does not take the value; a positional
# default; a group that is not a str; shape= without dtype=.
PerContainer("user_code.both", default=0, factory=int)  # type: ignore[call-overload]
PerContainer("user_code.hook", factory=Conn, on_exit=str.upper)  # type: ignore[misc]
PerContainer("user_code.positional", 0)  # type: ignore[call-overload]
PerContainer(name="user_code.no_group", group=None)  # type: ignore[call-overload]
PerContainer("user_code.object_shape", default=0, shape=3)  # type: ignore[call-overload]


# -- @per_container, with and without arguments -------------------------------------------------
@per_container
def cache() -> dict[str, str]:
    """Make a tenant's cache."""
    return {}


assert_type(cache, PerContainer[dict[str, str]])
assert_type(cache.get(), dict[str, str])


@per_container(group="net")
def routes() -> dict[str, int]:
    """Make a tenant's routing table."""
    return {}


assert_type(routes, PerContainer[dict[str, int]])


@per_container(name="user_code.peers")
def peers() -> set[str]:
    """Make a tenant's peer set."""
    return set()


assert_type(peers, PerContainer[set[str]])


@per_container(name=None, group="net", on_exit=None)
def queue() -> list[bytes]:
    """Make a tenant's queue."""
    return []


assert_type(queue, PerContainer[list[bytes]])


@per_container(on_exit=Conn.close)
def connection() -> Conn:
    """Open a tenant's connection."""
    return Conn()


assert_type(connection, PerContainer[Conn])


@per_container(on_exit=Conn.close)  # type: ignore[arg-type]  # the hook takes a Conn, not a str
def not_a_connection() -> str:
    """Return something the hook cannot close."""
    return ""


per_container(group=3)  # type: ignore[call-overload]  # group is a str


# -- typed variables: PerContainer(name, dtype=..., shape=..., default=...) ---------------------
counter = PerContainer("user_code.counter", dtype=np.int64)
assert_type(counter, PerContainer[int])
assert_type(counter.get(), int)
assert_type(counter.value, int)
assert_type(counter.add(1), int)
assert_type(counter.of(host), int)
assert_type(counter.sum(), int)
assert_type(counter.min(), int)
assert_type(counter.max(), int)
assert_type(counter.mean(), float)
assert_type(counter.values(), npt.NDArray[Any])
assert_type(counter.items(), list[tuple[Container, int]])
counter.set(5)
counter.set(1.5)  # type: ignore[arg-type]  # a float into an int variable

assert_type(PerContainer("user_code.small", dtype=np.uint8, default=1), PerContainer[int])
assert_type(PerContainer("user_code.by_dtype", dtype=np.dtype(np.int32)), PerContainer[int])
assert_type(PerContainer("user_code.py_int", dtype=int, shape=()), PerContainer[int])

flag = PerContainer("user_code.flag", dtype=bool)
assert_type(flag, PerContainer[bool])
assert_type(flag.get(), bool)
assert_type(flag.sum(), int)  # counts the Trues
assert_type(flag.max(), bool)
assert_type(PerContainer("user_code.np_flag", dtype=np.bool_, default=True), PerContainer[bool])

level = PerContainer("user_code.level", dtype=np.float32, default=0.5, group="net")
assert_type(level, PerContainer[float])
assert_type(level.get(), float)
assert_type(level.sum(), float)
assert_type(level.mean(), float)
level.set(2)  # an int into a float variable converts
assert_type(PerContainer("user_code.py_float", dtype=float), PerContainer[float])

histogram = PerContainer("user_code.histogram", dtype=np.uint64, shape=6)
assert_type(histogram, PerContainer[npt.NDArray[np.uint64]])
assert_type(histogram.get(), npt.NDArray[np.uint64])
assert_type(histogram.add(1), npt.NDArray[np.uint64])
assert_type(histogram.sum(), npt.NDArray[Any])
assert_type(histogram.max(), npt.NDArray[np.uint64])
assert_type(histogram.mean(), npt.NDArray[np.float64])
histogram.get()[0] += 1
histogram.set(0)  # broadcast to the shape
histogram.set([1, 2, 3, 4, 5, 6])
grid = PerContainer("user_code.grid", dtype=np.float64, shape=(2, 3), default=1.0)
assert_type(grid, PerContainer[npt.NDArray[np.float64]])
assert_type(PerContainer("user_code.py_grid", dtype=float, shape=3), PerContainer[npt.NDArray[Any]])

point = PerContainer("user_code.point", dtype=np.dtype([("x", np.float64), ("y", np.float64)]))
assert_type(point, PerContainer[npt.NDArray[np.void]])  # a record's get() is a 0-d array
assert_type(point.get(), npt.NDArray[np.void])

by_name = PerContainer("user_code.by_name", dtype="int64")  # a dtype the checkers cannot read
assert_type(by_name, PerContainer[Any])

# Rejected: factory= or on_exit= on a typed variable; a default that is no int for an int
# dtype; a shape that is neither an int nor a tuple.
PerContainer("user_code.typed_factory", dtype=np.int64, factory=int)  # type: ignore[call-overload]
PerContainer("user_code.typed_hook", dtype=np.int64, on_exit=print)  # type: ignore[call-overload]
PerContainer("user_code.typed_text", dtype=np.int64, default="0")  # type: ignore[call-overload]
PerContainer("user_code.typed_shape", dtype=np.int64, shape=[2])  # type: ignore[call-overload]


@per_container(dtype=np.float64, shape=4)
def latency_ms() -> list[float]:
    """Return the default: called once, now."""
    return [0.0, 0.0, 0.0, 0.0]


assert_type(latency_ms, PerContainer[npt.NDArray[np.float64]])
assert_type(latency_ms.sum(), npt.NDArray[Any])


@per_container(dtype=np.int64, group="net")
def budget() -> int:
    """Return the default budget."""
    return 100


assert_type(budget, PerContainer[int])


@per_container(name="user_code.weight", dtype=np.float32)
def weight() -> float:
    """Return the default weight."""
    return 1.0


assert_type(weight, PerContainer[float])


@per_container(dtype=np.int64)  # type: ignore[arg-type]  # an int variable's default is an int
def not_a_number() -> str:
    """Return a default that does not convert."""
    return "1"


per_container(dtype=np.int64, on_exit=print)  # type: ignore[call-overload]  # typed: no on_exit=


# -- containers ---------------------------------------------------------------------------------
acme = Container("acme")
team = Container("team", parent=acme, share=("net",))
anonymous = Container()
Container("acme", acme)  # type: ignore[call-arg]  # parent is keyword-only
Container(name=3)  # type: ignore[arg-type]  # a name is a str

assert_type(acme.id, int)
assert_type(acme.name, str | None)
assert_type(acme.parent, Container | None)
assert_type(acme.shared, frozenset[str])
assert_type(acme.closed, bool)
assert_type(acme.pinned, bool)
assert_type(acme.in_use, bool)
with acme as entered:
    assert_type(entered, Container)


def greet(who: str, punctuation: str = "!") -> str:
    """Greet someone."""
    return f"hello {who}{punctuation}"


assert_type(acme.run(greet, "acme"), str)
assert_type(acme.run(greet, "acme", punctuation="?"), str)
acme.run(greet, 1)  # type: ignore[arg-type]  # run() checks fn's arguments
assert_type(wrap(greet)("team"), str)
wrap(greet)(who=2)  # type: ignore[arg-type]  # and so does wrap()'s callable


async def greet_later(who: str) -> str:
    """Greet someone, asynchronously."""
    return who


async def tenant_task() -> None:
    """Await a coroutine function inside a container, as README shows."""
    async with acme as inside:
        assert_type(inside, Container)
    assert_type(await acme.run(greet_later, "acme"), str)


acme.pin()
acme.unpin()
team.close()
acme.close()
assert_type(current(), Container)
assert_type(containers(), list[Container])
assert_type(host, Container)
assert_type(ENABLED, bool)
implementation: str = IMPLEMENTATION  # "cython" or "python"
assert_type(ContainerClosedError(), ContainerClosedError)
assert issubclass(ContainerClosedError, ContainerError)
