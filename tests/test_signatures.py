"""Signatures: what inspect.signature() and help() show for both cores is README's API, and a
positional argument past the name says which arguments are keyword-only."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

New = Callable[..., Any]

# README's API section, as inspect.signature() prints it without the twin's annotations.
CLASSES = {
    "Container": "(name=None, *, parent=None, share=())",
    "PerContainer": ("(name, *, default=<unset>, factory=None, group='default', on_exit=None, "
                     "dtype=None, shape=())"),
}
CONTAINER_METHODS = {
    "run": "(fn, /, *args, **kwargs)",
    "pin": "()",
    "unpin": "()",
    "close": "()",
}
VARIABLE_METHODS = {
    "get": "()",
    "set": "(value)",
    "add": "(delta=1)",
    "reset": "()",
    "of": "(container)",
    "items": "()",
    "sum": "()",
    "values": "()",
    "min": "()",
    "max": "()",
    "mean": "()",
}
FUNCTIONS = {
    "per_container": ("(fn=None, /, *, name=None, group='default', on_exit=None, dtype=None, "
                      "shape=())"),
    "wrap": "(fn)",
    "current": "()",
    "containers": "()",
    "enter_from": "(containers, key)",
    "leave": "(container)",
}


def plain(obj: Any) -> str:
    """Return obj's signature as inspect prints it, without annotations (the twin's only)."""
    signature = inspect.signature(obj)
    parameters = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=signature.empty))


@pytest.mark.parametrize("cls", CLASSES)
def test_class_signature(pc: ModuleType, cls: str) -> None:
    assert plain(getattr(pc, cls)) == CLASSES[cls]


@pytest.mark.parametrize("method", CONTAINER_METHODS)
def test_container_method_signature(pc: ModuleType, new: New, method: str) -> None:
    assert plain(getattr(new(), method)) == CONTAINER_METHODS[method]


@pytest.mark.parametrize("method", VARIABLE_METHODS)
def test_variable_method_signature(pc: ModuleType, name: str, method: str) -> None:
    var = pc.PerContainer(name, default=0)
    assert plain(getattr(var, method)) == VARIABLE_METHODS[method]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_signature(pc: ModuleType, function: str) -> None:
    assert plain(getattr(pc, function)) == FUNCTIONS[function]


def test_docstrings_hold_no_stale_signature(pc: ModuleType) -> None:
    """The compiled core's docstrings are the twin's: the signature line Cython writes goes to
    __text_signature__, never into __doc__ (where it showed `parent` as positional)."""
    from percontainer import _core_py

    def same_doc(a: Any, b: Any) -> bool:
        return inspect.getdoc(a) == inspect.getdoc(b)

    for cls in CLASSES:
        assert same_doc(getattr(pc, cls), getattr(_core_py, cls)), cls
    for cls, methods in (("Container", CONTAINER_METHODS), ("PerContainer", VARIABLE_METHODS)):
        for method in methods:
            assert same_doc(getattr(getattr(pc, cls), method),
                            getattr(getattr(_core_py, cls), method)), (cls, method)
    for function in FUNCTIONS:
        assert same_doc(getattr(pc, function), getattr(_core_py, function)), function


def test_parent_is_keyword_only(pc: ModuleType, new: New) -> None:
    before = pc.containers()
    with pytest.raises(TypeError, match=r"parent and share are keyword-only, as in "
                                        r"Container\('x', parent=host\)"):
        pc.Container("x", pc.host)
    parent = new("parent")
    with pytest.raises(TypeError, match=r"3 were given: .* Container\('x', parent=\.\.\.\)"):
        pc.Container("x", parent, ("default",))
    assert pc.containers() == [*before, parent]  # nothing made
    child = new("x", parent=parent)  # the fix the message names works
    assert child.parent is parent


def test_default_is_keyword_only(pc: ModuleType, name: str) -> None:
    fix = re.escape(f"default and the rest are keyword-only, as in "
                    f"PerContainer({name!r}, default=0)")
    with pytest.raises(TypeError, match=fix):
        pc.PerContainer(name, 0)
    # Nothing was declared: the name is free for another group.
    var = pc.PerContainer(name, default=0, group=f"{name}.group")
    assert var.group == f"{name}.group"
