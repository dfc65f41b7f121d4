"""The command line: `python -m percontainer demo`, and a reader that closes the pipe early."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import percontainer as pc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo(**popen: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "percontainer", "demo"], env=env, **popen)  # type: ignore[call-overload]


def test_demo_prints_each_tenant_and_the_sum() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "percontainer", "demo"], capture_output=True, text=True, check=True,
        env=dict(os.environ, PYTHONPATH=ROOT), timeout=120).stdout
    assert out.startswith("core: ")
    each = 4 if pc.ENABLED else 12  # three asyncio requests and one thread's; disabled, one global
    for tenant in ("acme", "globex", "initech"):
        assert f"{tenant:8s} requests={each} " in out
    assert "requests over all containers: 12" in out


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pipe")
def test_demo_into_a_closed_pipe_exits_quietly() -> None:
    """`demo | grep -q ...` closes the pipe at the first match: no traceback, SIGPIPE's status."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    proc = _demo(stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode == 141


def test_version_names_the_core_and_python(capsys: pytest.CaptureFixture[str]) -> None:
    from percontainer.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"percontainer {pc.__version__} (core: {pc.IMPLEMENTATION}, Python ")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    from percontainer.__main__ import run_cli

    assert run_cli([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: percontainer ")  # the console script's own name
    assert "bench" in out and "demo" in out


def test_an_unknown_option_shows_its_command_s_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from percontainer.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["bench", "--fast"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m percontainer bench" in err and "--fast" in err
