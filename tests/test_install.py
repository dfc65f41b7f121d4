"""Installing without a C compiler gives the pure-Python twin, quietly (a real pip install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="/bin/false as the compiler")
def test_pip_install_without_a_compiler_installs_the_twin(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.so", "*.egg-info", "__pycache__", ".pytest_cache"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # numpy (the one dependency) comes from the environment running the tests (a venv too,
    # in CI): a .pth file in the new venv names where it lives.
    import numpy

    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    numpy_home = Path(numpy.__file__).parent.parent
    Path(site, "_test_runner_numpy.pth").write_text(f"{numpy_home}\n")
    no_compiler = dict(os.environ, CC="/bin/false", CXX="/bin/false", LDSHARED="/bin/false")
    no_compiler.pop("PERCONTAINER_NO_EXTENSIONS", None)
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q", str(source)],
        capture_output=True, text=True, env=no_compiler, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert not list((source / "percontainer").glob("*.so")), "copied a core that never built"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PERCONTAINER_")}
    check = subprocess.run(  # -W error: an installed twin must not warn on import
        [python, "-W", "error", "-c",
         "import percontainer; print(percontainer.IMPLEMENTATION)"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env, timeout=120)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "python"
