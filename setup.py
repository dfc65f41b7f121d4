"""Build the Cython core unless told not to; the pure-Python twin always installs.

Switches (environment variables):
  PERCONTAINER_NO_EXTENSIONS=1   install the pure-Python twin only
  PERCONTAINER_DEBUG_BUILD=1     -O0 -g3 with asserts on (CYTHON_REFNANNY-free debug build)
  PERCONTAINER_CYTHON_TRACING=1  linetrace/profile, for coverage of the .pyx
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no", "off"}


NO_EXTENSIONS = env_flag("PERCONTAINER_NO_EXTENSIONS") or sys.implementation.name != "cpython"
DEBUG_BUILD = env_flag("PERCONTAINER_DEBUG_BUILD")
TRACING = env_flag("PERCONTAINER_CYTHON_TRACING")


class OptionalBuildExt(build_ext):
    """Build the core, but install the twin alone when there is no working compiler."""

    def run(self) -> None:
        self.not_built: list[str] = []  # extensions whose build failed (build_extension)
        try:
            super().run()
        except Exception as error:  # noqa: BLE001  # any compiler failure: fall back to the twin
            print(f"*** percontainer: the Cython core did not build ({error}); "
                  "installing the pure-Python twin", file=sys.stderr)
            return
        if self.inplace:
            return
        if self.not_built:  # nothing to copy: the checkout keeps what it had (or the twin)
            print(f"*** percontainer: {', '.join(self.not_built)} not built: nothing copied "
                  "beside the sources", file=sys.stderr)
            return
        # Also put the built core beside its sources, so that `python -m percontainer` and
        # `python -m pytest`, run from the root of a checkout (which puts the sources first on
        # sys.path), use the compiled core rather than the twin.
        try:
            self.copy_extensions_to_source()
        except Exception as error:  # noqa: BLE001  # a read-only source tree: the installed copy works
            print(f"*** percontainer: not copied beside the sources ({error})", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001  # see run()
            self.not_built.append(ext.name)
            print(f"*** percontainer: {ext.name} did not build ({error}); "
                  "installing the pure-Python twin", file=sys.stderr)


def extensions() -> list[Extension]:
    from Cython.Build import cythonize

    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if TRACING else []
    if DEBUG_BUILD:
        compile_args, macros = ["-O0", "-g3", "-UNDEBUG"], macros + [("CYTHON_DEBUG", "1")]
    else:
        compile_args = ["-O2"]
    directives = {"linetrace": True, "profile": True} if TRACING else {}
    exts = [
        Extension(f"percontainer.{name}", [f"percontainer/{name}.pyx"],
                  extra_compile_args=compile_args, define_macros=macros)
        for name in ("_rows_c", "_core_c")  # the typed storage, and the core that cimports it
    ]
    return cythonize(exts, compiler_directives=directives, gdb_debug=DEBUG_BUILD,
                     force=DEBUG_BUILD or TRACING)


if NO_EXTENSIONS:
    print("*** percontainer: PERCONTAINER_NO_EXTENSIONS set: pure-Python twin only")
    setup()
else:
    print(f"*** percontainer: building the Cython core (debug={DEBUG_BUILD}, tracing={TRACING})")
    setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
