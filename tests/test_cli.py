"""The command line: `python -m percontainer demo`, a reader that closes the pipe early, and
bench's outputs checked before it measures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.parametrize("option, path, says", [
    ("--json", "missing/bench.json", "missing does not exist; create it first"),
    ("--json", ".", "is a directory; give a file name inside it"),
    ("--json", "file.txt/bench.json", "file.txt is not a directory"),
    ("--plot", "sweeps.txt", "is not a format matplotlib writes; end the name with one of"),
    ("--plot", "sweeps", "no file suffix; end the name with one of"),
])
def test_bench_checks_its_outputs_before_measuring(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, option: str, path: str, says: str) -> None:
    """A path the results could not be written to fails now, with bench's usage, not in a
    traceback after the whole run."""
    if option == "--plot":
        pytest.importorskip("matplotlib")  # without it, --plot fails for that reason first
    from percontainer.__main__ import main
    from percontainer.benchmark import runner

    def measuring(*args: object, **kwargs: object) -> int:
        raise AssertionError("the run started before its outputs were checked")

    monkeypatch.setattr(runner, "main_bench", measuring)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["bench", option, path])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m percontainer bench")
    assert f"error: {option} {path}: " in err and says in err


def test_bench_plot_without_matplotlib_names_the_extra(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    from percontainer.__main__ import main
    from percontainer.benchmark import runner

    def measuring(*args: object, **kwargs: object) -> int:
        raise AssertionError("the run started before its outputs were checked")

    monkeypatch.setattr(runner, "main_bench", measuring)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--plot", str(tmp_path / "sweeps.png")])
    assert exited.value.code == 2
    assert "--plot needs matplotlib: pip install 'percontainer[plot]'" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="POSIX permissions, which root bypasses")
def test_bench_refuses_a_read_only_file_up_front(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    from percontainer.__main__ import main
    from percontainer.benchmark import runner

    monkeypatch.setattr(runner, "main_bench", None)  # calling it would fail the test
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o444)
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--json", str(kept)])
    assert exited.value.code == 2
    assert "the file is not writable; pick another path" in capsys.readouterr().err
    assert kept.read_text() == "{}"
