"""What an entry sets in the current-container ContextVar (a frame): reused only when nothing
else can reach it, and never made by code outside the core."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import sysconfig
from types import ModuleType
from typing import Any

import pytest


def _current_value(context: contextvars.Context) -> Any:
    """Return what the core's ContextVar holds in context."""
    for var, value in context.items():
        if var.name == "percontainer.current":
            return value
    raise AssertionError("no container is entered in this context")


@pytest.mark.enabled_only
def test_a_context_copied_inside_an_entry_keeps_its_container(pc: ModuleType) -> None:
    a, b = pc.Container("a"), pc.Container("b")
    try:
        with a:
            copied = contextvars.copy_context()
        for _ in range(100):  # later entries may take an exited frame nothing else holds
            with b:
                assert pc.current() is b
            b.run(pc.current)
        assert copied.run(pc.current) is a
        assert pc.current() is pc.host
    finally:
        a.close()
        b.close()


@pytest.mark.enabled_only
def test_a_task_made_inside_an_entry_keeps_its_container_after_later_entries(
        pc: ModuleType) -> None:
    a, b = pc.Container("a"), pc.Container("b")
    seen: list[Any] = []

    async def child() -> None:
        await asyncio.sleep(0)  # the parent left a and entered b meanwhile, many times
        seen.append(pc.current())

    async def parent() -> None:
        with a:
            task = asyncio.create_task(child())
        for _ in range(50):
            with b:
                pass
        await task

    try:
        asyncio.run(parent())
        assert seen == [a]
    finally:
        a.close()
        b.close()


@pytest.mark.c_extension
def test_no_code_outside_the_core_makes_a_frame() -> None:
    """A frame's container is read with no check: a frame made by Python code would hold
    None, so its type cannot be instantiated (it could be reached through copy_context())."""
    import percontainer._core_c as pc

    if not pc.ENABLED:
        pytest.skip("no frames in disabled mode: entries set nothing")
    c = pc.Container()
    try:
        with c:
            frame = _current_value(contextvars.copy_context())
        frame_type = type(frame)
        with pytest.raises(TypeError):
            frame_type()
        with pytest.raises(TypeError):
            frame_type.__new__(frame_type)
        with pytest.raises(TypeError):
            object.__new__(frame_type)
    finally:
        c.close()


@pytest.mark.c_extension
def test_an_exited_frame_nothing_holds_is_reused_where_proven() -> None:
    """Fails if the reuse is off where a refcount of 1 proves that nothing else holds the
    frame (GIL builds, 3.10 to 3.13), or on where it does not."""
    import percontainer._core_c as pc

    expected = sys.version_info < (3, 14) and not sysconfig.get_config_var("Py_GIL_DISABLED")
    assert pc._frames_reused() is expected
    if not pc.ENABLED:
        return  # no frames in disabled mode: entries set nothing
    a, b = pc.Container(), pc.Container()
    try:
        with a:
            first = id(_current_value(contextvars.copy_context()))
        with b:
            second = id(_current_value(contextvars.copy_context()))
        assert (first == second) is expected
        with a:
            held = _current_value(contextvars.copy_context())
        with b:  # the held frame is not reused
            assert _current_value(contextvars.copy_context()) is not held
    finally:
        a.close()
        b.close()
