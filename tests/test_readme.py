"""README's Python blocks paste into the interactive interpreter as they stand: with the
prompts and the expected output taken away, every compound statement ends with a blank line
before the next statement (the REPL needs it; `python -m doctest README.md` runs them too)."""

from __future__ import annotations

import code
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[tuple[int, list[str]]]:
    """Return (first line number, lines) for each ```python block."""
    blocks, lines = [], README.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.strip() == "```python":
            end = lines.index("```", number + 1)
            blocks.append((number + 2, lines[number + 1:end]))
    return blocks


def _as_pasted(lines: list[str]) -> list[str]:
    """Return what a user pastes: a doctest block's source lines without their prompts."""
    if not any(line.startswith(">>> ") for line in lines):
        return lines
    return [line[4:] if line[:4] in (">>> ", "... ") else "" if line == "..." else None
            for line in lines if line.startswith((">>>", "..."))]  # type: ignore[misc]


class _CompileOnly(code.InteractiveConsole):
    """An interactive console that compiles what is pasted into it but runs none of it."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def runcode(self, code: object) -> None:
        pass

    def showsyntaxerror(self, filename: str | None = None, **kwargs: object) -> None:
        self.errors.append(filename or "")


@pytest.mark.parametrize(("first", "lines"), _python_blocks(),
                         ids=lambda value: f"line-{value}" if isinstance(value, int) else "")
def test_each_block_pastes_into_the_repl(first: int, lines: list[str]) -> None:
    console = _CompileOnly()
    for offset, line in enumerate(_as_pasted(lines)):
        console.push(line)
        assert not console.errors, (
            f"README.md line {first + offset}: a SyntaxError when pasted into the REPL "
            f"(a compound statement needs a blank line, `...` in a doctest, after it): {line!r}")
    console.push("")


def test_the_readme_has_python_blocks() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 2
    assert any(re.match(r">>> (with|for|def) ", line) for _, lines in blocks for line in lines)
