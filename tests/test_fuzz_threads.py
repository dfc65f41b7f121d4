"""A multi-threaded stateful fuzz of both cores: no tenant or variable crossing, ever.

Several threads, a very short switch interval and a gc callback that itself uses the library
(reads variables, creates, enters and closes a container) drive a seeded random sequence of
declare / drop variables (object with a default, object with a factory, typed int64, float64
and an int64 array), create / enter / leave / close containers, set / add / reset / get / of,
and reductions (items, sum, values, min, max, mean).

Every stored value is tagged with the variable and the container it was written for (a tuple
or Box for object variables; for typed ones, the number itself encodes them, see `tag`): any
read that returns a value tagged for another variable or container fails loudly. Each thread
writes only its own containers and its own variables, so it keeps an exact model of them and
checks every read, every exit hook and every reduction of its own variables against it; the
shared variables and the common containers, which every thread enters, are checked by tag and
by bounds, and exactly at the end. The choices are seeded; nothing depends on timing.
"""

from __future__ import annotations

import gc
import itertools
import random
import sys
import threading
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _pc_helpers import Box, run_threads, switch_often

SEED = 9
THREADS = 4
STEPS = 6000  # per thread: a few seconds per core on a slow, shared machine
MAX_DEPTH = 3  # containers a thread is inside at once
GC_EVERY = 3  # the gc callback does library work on every 3rd collection a thread triggers
COMMONS = 16  # containers every thread enters: factories race on their first read there
# Entering a container sets a ContextVar. Before CPython 3.12, a ContextVar set by a gc callback
# or finalizer while the interrupted code is inside a ContextVar.set() of the same context frees
# the HAMT that set() is still walking (python/cpython#148891): CPython crashes, whatever the
# library does. There, the gc callback makes, reads and closes a container but enters none.
ENTER_IN_GC = sys.version_info >= (3, 12)

OBJ, FAC, I64, F64, ARR = "obj", "fac", "i64", "f64", "arr"
KINDS = (OBJ, FAC, I64, F64, ARR)
TYPED = (I64, F64, ARR)
WIDTH = 3  # the array variables' shape

# A typed value is ((container id << CODE_BITS | variable code) << N_BITS) | n, with n >= 1:
# exact in int64 and float64 while container ids stay below 2**23. 0 is the default: unset.
N_BITS, CODE_BITS = 16, 14
N_MAX = (1 << N_BITS) - WIDTH - 1


def tag(cid: int, code: int, n: int) -> int:
    return ((cid << CODE_BITS | code) << N_BITS) | n


def untag(value: Any) -> tuple[int, int, int]:
    """Return (container id, variable code, n) of a typed value."""
    number = int(value)
    assert number == value and number > 0, f"{value!r} is no tagged value"
    return number >> (N_BITS + CODE_BITS), (number >> N_BITS) & ((1 << CODE_BITS) - 1), \
        number & ((1 << N_BITS) - 1)


class Crossing(AssertionError):
    """A read returned a value written for another variable or container."""


class Var:
    """One declared variable and what the fuzz knows about it."""

    def __init__(self, var: Any, name: str, kind: str, code: int) -> None:
        self.var = var
        self.name = name
        self.kind = kind
        self.code = code

    def __repr__(self) -> str:
        return f"{self.kind}:{self.name}"


class World:
    """What the threads share: the core, the shared variables, the common containers, the
    records exit hooks and factories leave, and what the gc callback found."""

    def __init__(self, pc: ModuleType, name: str) -> None:
        self.pc = pc
        self.name = name
        self.codes = itertools.count(1)  # next() is atomic under the GIL
        self.hooks: defaultdict[int, list[str]] = defaultdict(list)  # cid -> variables
        self.factory_runs: list[tuple[str, int]] = []
        self.gc_errors: list[str] = []
        self.gc_work = 0
        self.adds_started = [0] * THREADS  # per thread: counter adds begun, for sum bounds
        self.shared_adds = [0] * THREADS  # per thread: adds to the common containers, done
        self.live: dict[int, Any] = {}  # cid -> every thread's live containers (for peeks)
        self.shared = {kind: self.declare(f"{name}.shared.{kind}", kind) for kind in KINDS}
        self.counter = self.declare(f"{name}.shared.counter", I64)
        self.ocounter = Var(pc.PerContainer(f"{name}.shared.ocounter", default=0),
                            f"{name}.shared.ocounter", "ocount", 0)
        self.commons = [pc.Container(f"common{i}", parent=pc.host) for i in range(COMMONS)]
        self.made: dict[str, Any] = {}  # "cid:variable" -> the value a shared factory made

    # -- variables -------------------------------------------------------------------------
    def declare(self, var_name: str, kind: str) -> Var:
        pc = self.pc
        code = next(self.codes)
        assert code < 1 << CODE_BITS, "too many declarations for the tag's code field"
        if kind == OBJ:
            var = pc.PerContainer(var_name, default=None, on_exit=self.hook(var_name))
        elif kind == FAC:
            var = pc.PerContainer(var_name, factory=self.factory(var_name),
                                  on_exit=self.hook(var_name))
        elif kind == I64:
            var = pc.PerContainer(var_name, dtype="int64")
        elif kind == F64:
            var = pc.PerContainer(var_name, dtype="float64")
        else:
            var = pc.PerContainer(var_name, dtype="int64", shape=WIDTH)
        return Var(var, var_name, kind, code)

    def hook(self, var_name: str) -> Callable[[Any], None]:
        def on_exit(value: Any) -> None:
            cid = self.pc.current().id  # a hook runs inside the container torn down
            self.check_object(var_name, cid, value, "on_exit")
            self.hooks[cid].append(var_name)
        return on_exit

    def factory(self, var_name: str) -> Callable[[], Box]:
        def make() -> Box:
            cid = self.pc.current().id  # a factory runs inside the container it makes for
            self.factory_runs.append((var_name, cid))
            return Box((var_name, cid))
        return make

    # -- tag checks --------------------------------------------------------------------------
    @staticmethod
    def check_object(var_name: str, cid: int, value: Any, where: str) -> None:
        """An object value is None (the default) or tagged (variable, container)."""
        if value is None:
            return
        got = value.payload if isinstance(value, Box) else value
        if not (isinstance(got, tuple) and got[:2] == (var_name, cid)):
            raise Crossing(f"{where}: {var_name!r} in container {cid} holds {value!r}, "
                           f"written for another variable or container")

    @staticmethod
    def check_typed(v: Var, cid: int | None, value: Any, where: str) -> None:
        """A typed value is 0 (the default) or tagged (variable, container); an array's
        elements are the tag plus their index. cid None: any container (a reduction)."""
        try:
            numbers = np.asarray(value, dtype=np.float64 if v.kind == F64 else np.int64)
        except (TypeError, ValueError):
            raise Crossing(f"{where}: {v!r} in container {cid} holds {value!r}, "
                           f"not a number: an object variable's value") from None
        elements = numbers.reshape(-1).tolist()
        if not any(elements):
            return
        first = untag(elements[0])
        wanted = (first[0] if cid is None else cid, v.code)
        if first[:2] != wanted or elements != [elements[0] + i for i in range(len(elements))]:
            raise Crossing(f"{where}: {v!r} (code {v.code}) in container {cid} holds {value!r} "
                           f"= {[untag(e) if e else 0 for e in elements]}, "
                           f"written for another variable or container")

    def check_values(self, v: Var, rows: Any, where: str) -> list[Any]:
        """values(): rows ordered by container id, each 0 or tagged for this variable; return
        the non-zero rows as lists."""
        found, last = [], -1
        for row in rows:
            self.check_typed(v, None, row, where)
            elements = np.asarray(row).reshape(-1).tolist()
            if any(elements):
                cid = untag(elements[0])[0]
                if cid <= last:
                    raise Crossing(f"{where}: {v!r} rows out of container order: "
                                   f"{cid} after {last} in {rows!r}")
                last = cid
                found.append(elements if v.kind == ARR else elements[0])
        return found

    # -- the gc callback -----------------------------------------------------------------------
    @contextmanager
    def gc_callback(self) -> Iterator[None]:
        local = threading.local()

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase != "start" or getattr(local, "busy", False):
                return
            local.count = getattr(local, "count", 0) + 1
            if local.count % GC_EVERY:
                return
            local.busy = True
            try:
                self.gc_library_work()
            except BaseException:  # noqa: BLE001  # an error in a gc callback is only printed
                self.gc_errors.append(traceback.format_exc())
            finally:
                local.busy = False

        old = gc.get_threshold()
        gc.set_threshold(200, 5, 5)  # collect often, inside the library's code too
        gc.callbacks.append(callback)
        try:
            yield
        finally:
            gc.callbacks.remove(callback)
            gc.set_threshold(*old)

    def gc_library_work(self) -> None:
        """Read the shared variables where the interrupted thread is, then make, use and close
        a container (a finalizer or a gc callback may do all of this)."""
        pc = self.pc
        self.gc_work += 1
        here = pc.current()
        obj, i64, arr = self.shared[OBJ], self.shared[I64], self.shared[ARR]
        self.check_object(obj.name, here.id, obj.var.get(), "gc callback get()")
        self.check_typed(i64, here.id, i64.var.get(), "gc callback get()")
        made = pc.Container("gc", parent=pc.host)
        try:
            if obj.var.of(made) is not None or i64.var.of(made) != 0 or arr.var.of(made).any():
                raise Crossing(f"a new container {made!r} is not unset")
            if ENTER_IN_GC:
                with made:
                    assert pc.current() is made
                    obj.var.set((obj.name, made.id, 0))
                    i64.var.set(tag(made.id, i64.code, 1))
                    self.check_object(obj.name, made.id, obj.var.get(), "gc callback get()")
                    assert i64.var.get() == tag(made.id, i64.code, 1)
        finally:
            made.close()
        assert pc.current() is here


class Worker:
    """One thread's random walk and its exact model of what it owns."""

    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.pc = world.pc
        self.index = index
        self.rng = random.Random(SEED * 1000 + index)
        self.step = 0
        self.stack: list[Any] = []  # the containers entered, innermost last
        self.own: dict[Any, dict[str, Any]] = {}  # live own container -> variable -> value
        self.children: dict[Any, list[Any]] = {}
        self.dead: list[Any] = []  # own containers closed (a few, to check they stay closed)
        self.private: dict[str, Var] = {}  # this thread's own variables
        # (container, variable) -> the value a private factory made in the host or common
        self.elsewhere: dict[tuple[Any, str], Any] = {}
        self.serial = itertools.count()

    def fail(self, message: str) -> None:
        raise AssertionError(f"thread {self.index}, step {self.step} (seed {SEED}): {message}")

    # -- the walk ------------------------------------------------------------------------------
    def run(self) -> None:
        ops = [(self.create, 6), (self.enter, 8), (self.leave, 6), (self.close, 4),
               (self.write, 30), (self.read, 20), (self.read_closed, 2), (self.peek, 6),
               (self.reduce_private, 5), (self.reduce_shared, 4), (self.declare, 3),
               (self.drop, 2), (self.garbage, 4)]
        choices, weights = zip(*ops)
        for _ in range(3):
            self.declare()
        try:
            for self.step in range(STEPS):
                self.rng.choices(choices, weights)[0]()
            self.finish()
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """After a failure: leave and close what this thread holds, checking nothing."""
        for container in reversed(self.stack):
            try:
                container.__exit__(None, None, None)
            except Exception:  # noqa: BLE001, S110  # the failure that brought us here is raised
                pass
        for container in self.own:
            try:
                container.close()
            except Exception:  # noqa: BLE001, S110  # likewise
                pass

    def finish(self) -> None:
        while self.stack:
            self.leave()
        for container in list(self.own):
            if container.parent is self.pc.host:
                self.close_one(container)
        assert not self.own
        if self.pc.current() is not self.pc.host:
            self.fail(f"after leaving everything, current() is {self.pc.current()!r}")

    # -- containers --------------------------------------------------------------------------
    def current(self) -> Any:
        return self.stack[-1] if self.stack else self.pc.host

    def create(self) -> None:
        parents = [c for c in self.own if len(self.children[c]) < 2]
        parent = self.rng.choice(parents) if parents and self.rng.random() < 0.3 else self.pc.host
        container = self.pc.Container(f"t{self.index}.{next(self.serial)}", parent=parent)
        self.own[container] = {}
        self.children[container] = []
        if parent is not self.pc.host:
            self.children[parent].append(container)
        self.world.live[container.id] = container

    def enter(self) -> None:
        if len(self.stack) >= MAX_DEPTH:
            return
        if self.rng.random() < 0.2:
            target = self.rng.choice(self.world.commons)
        elif self.own:
            target = self.rng.choice(list(self.own))
        else:
            return
        target.__enter__()
        self.stack.append(target)
        if self.pc.current() is not target:
            self.fail(f"entered {target!r}, current() is {self.pc.current()!r}")

    def leave(self) -> None:
        if not self.stack:
            return
        self.stack.pop().__exit__(None, None, None)
        if self.pc.current() is not self.current():
            self.fail(f"left to {self.current()!r}, current() is {self.pc.current()!r}")

    def close(self) -> None:
        busy = set()
        for container in self.stack:  # the entered ones and their ancestors stay open
            while container is not None and container is not self.pc.host:
                busy.add(container)
                container = container.parent
        closable = [c for c in self.own if c not in busy]
        if closable:
            self.close_one(self.rng.choice(closable))

    def close_one(self, container: Any) -> None:
        closing = self.subtree(container)
        expected = {c.id: sorted(self.hooked(c)) for c in closing}
        container.close()
        for c in closing:
            fired = sorted(self.world.hooks.pop(c.id, []))
            if fired != expected[c.id]:
                self.fail(f"closing {c!r}: exit hooks ran for {fired}, expected {expected[c.id]}")
            if not c.closed:
                self.fail(f"{c!r} is not closed after its ancestor's close()")
            del self.own[c], self.children[c]
            self.world.live.pop(c.id, None)
            self.dead.append(c)
        parent = container.parent
        if parent in self.children:
            self.children[parent].remove(container)
        del self.dead[:-4]

    def subtree(self, container: Any) -> list[Any]:
        found = [container]
        for child in self.children[container]:
            found.extend(self.subtree(child))
        return found

    def hooked(self, container: Any) -> list[str]:
        """The variables whose exit hook closing `container` runs."""
        kinds = {v.name: v.kind for v in self.variables()}
        return [var_name for var_name in self.own[container]
                if kinds.get(var_name) in (OBJ, FAC)]

    # -- variables -------------------------------------------------------------------------
    def variables(self) -> list[Var]:
        return [*self.private.values(), *self.world.shared.values()]

    def declare(self) -> None:
        kind = self.rng.choice(KINDS)
        var_name = f"{self.world.name}.t{self.index}.v{next(self.serial)}.{kind}"
        self.private[var_name] = self.world.declare(var_name, kind)
        # A new variable is unset everywhere, whatever slot or row it reuses.
        self.check_read(self.private[var_name], self.current())

    def drop(self) -> None:
        if len(self.private) <= 1:
            return
        var_name = self.rng.choice(sorted(self.private))
        del self.private[var_name]  # the last reference: the variable is released now
        for values in self.own.values():
            values.pop(var_name, None)
        for key in [key for key in self.elsewhere if key[1] == var_name]:
            del self.elsewhere[key]

    # -- writes and reads in the current container ---------------------------------------------
    def pick(self) -> Var:
        return self.rng.choice(self.variables())

    def write(self) -> None:
        here = self.current()
        if here in self.world.commons:
            self.add_common()
            return
        if here not in self.own:  # the host: only read
            self.read()
            return
        v = self.pick()
        model = self.own[here]
        old = model.get(v.name)
        roll = self.rng.random()
        value: Any
        if v.kind == FAC:
            self.check_read(v, here)
        elif roll < 0.15:
            v.var.reset()
            model.pop(v.name, None)
        elif v.kind == OBJ:
            value = (v.name, here.id, self.step)
            v.var.set(value)
            model[v.name] = value
        elif v.kind == ARR:
            base = tag(here.id, v.code, 1 + self.rng.randrange(N_MAX))
            value = [base + i for i in range(WIDTH)]
            v.var.set(value)
            model[v.name] = value
        elif roll < 0.6 and old is not None and untag(old)[2] < N_MAX:
            got = v.var.add(1)
            model[v.name] = old + 1
            if got != old + 1:
                self.fail(f"{v!r}.add(1) in {here!r} returned {got!r}, expected {old + 1}")
        else:
            value = tag(here.id, v.code, 1 + self.rng.randrange(N_MAX))
            v.var.set(float(value) if v.kind == F64 else value)
            model[v.name] = value
        self.count_add()
        self.check_read(v, here)

    def count_add(self) -> None:
        """Add 1 to the shared counters in the current (own) container."""
        world = self.world
        world.adds_started[self.index] += 1
        world.counter.var.add(1)
        world.ocounter.var.add(1)

    def add_common(self) -> None:
        """In a common container every thread adds to the counters: exact at the end."""
        world = self.world
        world.adds_started[self.index] += 1
        world.counter.var.add(1)
        world.ocounter.var.add(1)
        world.shared_adds[self.index] += 1

    def read(self) -> None:
        here = self.current()
        if self.pc.current() is not here:
            self.fail(f"current() is {self.pc.current()!r}, expected {here!r}")
        self.check_read(self.pick(), here)

    def check_read(self, v: Var, here: Any, *, via_of: bool = False) -> None:
        """Read v in `here` (the current container, or by of()) and check it with the model."""
        value = v.var.of(here) if via_of else v.var.get()
        where = f"{'of' if via_of else 'get'}() of {v!r} in {here!r}"
        if v.kind == FAC:
            self.check_factory_value(v, here, value, where)
            return
        if here in self.own:
            expected = self.own[here].get(v.name)
        else:  # the host or a common container: no one writes them (but the counters)
            expected = None
        if v.kind in TYPED:
            self.world.check_typed(v, here.id, value, where)
            got = np.asarray(value).tolist()
            want = expected if expected is not None else ([0] * WIDTH if v.kind == ARR else 0)
            if got != want:
                self.fail(f"{where} is {got!r}, expected {want!r}")
        else:
            self.world.check_object(v.name, here.id, value, where)
            if value != expected:
                self.fail(f"{where} is {value!r}, expected {expected!r}")

    def check_factory_value(self, v: Var, here: Any, value: Any, where: str) -> None:
        """The factory runs once per container; every read returns the object it made."""
        if not (isinstance(value, Box) and value.payload == (v.name, here.id)):
            raise Crossing(f"{where} is {value!r}, made for another variable or container")
        if here in self.own:
            known = self.own[here].setdefault(v.name, value)
        elif v.name in self.private:
            known = self.elsewhere.setdefault((here, v.name), value)
        else:  # the host or a common container, read by every thread
            known = self.world.made.setdefault(f"{here.id}:{v.name}", value)
        if known is not value:
            self.fail(f"{where} is {value!r}, not the object {known!r} its factory made")

    def read_closed(self) -> None:
        """A closed container can be neither read nor entered."""
        if not self.dead:
            return
        container = self.rng.choice(self.dead)
        v = self.pick()
        try:
            got = v.var.of(container)
        except self.pc.ContainerClosedError:
            pass
        else:
            self.fail(f"of() of {v!r} in closed {container!r} returned {got!r}")
        try:
            container.__enter__()
        except self.pc.ContainerClosedError:
            return
        container.__exit__(None, None, None)
        self.fail(f"entering closed {container!r} succeeded")

    def peek(self) -> None:
        """Read a shared variable in any thread's container: tagged right, or closed."""
        world = self.world
        live = list(world.live.values())
        if not live:
            return
        container = self.rng.choice(live)
        v = world.shared[self.rng.choice((OBJ, I64, F64, ARR))]  # no factory: it would write
        try:
            value = v.var.of(container)
        except self.pc.ContainerClosedError:
            return
        where = f"of() of {v!r} in {container!r} (another thread's)"
        if v.kind in TYPED:
            world.check_typed(v, container.id, value, where)
        else:
            world.check_object(v.name, container.id, value, where)

    # -- reductions ----------------------------------------------------------------------------
    def reduce_private(self) -> None:
        """Reductions of this thread's own variables are exact: no one else writes them."""
        if not self.private:
            return
        v = self.private[self.rng.choice(sorted(self.private))]
        mine = [model[v.name] for c, model in sorted(self.own.items(), key=lambda p: p[0].id)
                if v.name in model]
        if v.kind in (OBJ, FAC):
            pairs = v.var.items()
            got = {c: value for c, value in pairs}
            expected = {c: model[v.name] for c, model in self.own.items() if v.name in model}
            expected.update((c, value) for (c, var_name), value in self.elsewhere.items()
                            if var_name == v.name)
            for c, value in pairs:
                if v.kind == FAC:
                    self.check_factory_value(v, c, value, f"items() of {v!r}")
                else:
                    self.world.check_object(v.name, c.id, value, f"items() of {v!r}")
            if got != expected:
                self.fail(f"items() of {v!r} is {pairs!r}, expected {expected!r}")
            return
        what = self.rng.choice(("values", "sum", "items", "minmax", "mean"))
        where = f"{what}() of {v!r}"
        if what == "values":
            found = self.world.check_values(v, v.var.values(), where)
            if found != mine:
                self.fail(f"{where} has the non-zero rows {found!r}, expected {mine!r}")
        elif what == "sum":
            total = v.var.sum()
            want: Any = np.sum(mine, axis=0).tolist() if mine else (
                [0] * WIDTH if v.kind == ARR else 0)
            if np.asarray(total).tolist() != want:
                self.fail(f"{where} is {total!r}, expected {want!r}")
        elif what == "items":
            for c, value in v.var.items():
                self.world.check_typed(v, c.id, value, where)
                want = self.own[c].get(v.name) if c in self.own else None
                if want is not None and np.asarray(value).tolist() != want:
                    self.fail(f"{where}: {c!r} holds {value!r}, expected {want!r}")
        elif what == "minmax" and v.kind != ARR:
            low, high = v.var.min(), v.var.max()
            if low != 0 or high != max(mine, default=0):  # the host's row is always 0
                self.fail(f"min(), max() of {v!r} are {low!r}, {high!r}; expected 0, "
                          f"{max(mine, default=0)}")
        elif what == "mean" and v.kind != ARR:
            average = v.var.mean()
            if not 0 <= average <= max(mine, default=0):
                self.fail(f"{where} is {average!r}, outside [0, {max(mine, default=0)}]")

    def reduce_shared(self) -> None:
        """Reductions of the shared variables, which every thread writes: tags and bounds."""
        world = self.world
        v = world.shared[self.rng.choice((OBJ, I64, F64, ARR))]
        if v.kind == OBJ:
            for c, value in v.var.items():
                world.check_object(v.name, c.id, value, f"items() of {v!r}")
        else:
            world.check_values(v, v.var.values(), f"values() of {v!r}")
        counter, ocounter = world.counter.var, world.ocounter.var
        what = self.rng.choice(("sum", "osum", "mean", "minmax"))
        result: Any
        if what == "sum":
            result = counter.sum()
        elif what == "osum":
            result = ocounter.sum()
        elif what == "mean":
            result = counter.mean()
        else:
            result = counter.min(), counter.max()
        bound = sum(world.adds_started)  # read after the reduction: no smaller than what it saw
        low, high = result if what == "minmax" else (result, result)
        if not 0 <= low <= high <= bound:
            self.fail(f"{what}() of the shared counter is {result!r}, outside [0, {bound}]")

    # -- garbage, to make the gc callback run in the middle of things ------------------------
    def garbage(self) -> None:
        for _ in range(self.rng.randrange(50)):
            cycle: list[Any] = []
            cycle.append(cycle)


@pytest.mark.slow
@pytest.mark.enabled_only
def test_threads_fuzz_without_crossing(pc: ModuleType, name: str) -> None:
    world = World(pc, name)
    workers = [Worker(world, i) for i in range(THREADS)]
    try:
        with world.gc_callback(), switch_often():
            run_threads([w.run for w in workers])
        assert not world.gc_errors, "the gc callback failed:\n" + "\n".join(world.gc_errors)
        assert world.gc_work > 0, "the gc callback never did library work"
        # The factory ran once for each container it made a value for (racing threads wait).
        runs = Counter(world.factory_runs)
        assert [key for key, count in runs.items() if count > 1] == []
        # Every add to the common containers counted (racing adds lose nothing).
        assert sum(world.counter.var.of(c) for c in world.commons) == sum(world.shared_adds)
        assert sum(world.ocounter.var.of(c) for c in world.commons) == sum(world.shared_adds)
        for v in world.shared.values():  # no one wrote the host or the common containers
            for c in [pc.host, *world.commons]:
                if v.kind == OBJ:
                    assert v.var.of(c) is None
                elif v.kind in TYPED:
                    assert not np.asarray(v.var.of(c)).any()
        assert sys.getswitchinterval() > 1e-4  # switch_often restored it
    finally:
        for c in world.commons:
            c.close()
