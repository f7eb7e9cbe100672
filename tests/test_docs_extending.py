"""docs/extending.md runs as written: every section's code blocks, in order.

Blocks marked ``file=NAME`` (of any section) are written to a scratch directory, the current
directory of the rest; ``python`` blocks are executed (one namespace per section) and each line
of a ``sh`` block is a ``bitsweep`` command, run in-process (``NAME=value`` prefixes set the
environment; W&B disabled), which must exit 0.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from suite.cli import main as bitsweep

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
_FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def _sections() -> dict[str, list[tuple[str, str | None, str]]]:
    """Section title -> its blocks (language, file name or None, code), in document order."""
    out: dict[str, list[tuple[str, str | None, str]]] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        blocks = []
        for lang, info, code in _FENCE.findall(part):
            name = re.search(r"file=(\S+)", info)
            blocks.append((lang, name.group(1) if name else None, code))
        out[title] = blocks
    return out


SECTIONS = _sections()


def test_the_doc_has_the_four_sections_each_with_code() -> None:
    for title in ("Your model", "Your data", "Your layer rules", "Your scale rule"):
        assert any(lang in ("python", "sh") and not name for lang, name, _ in SECTIONS[title]), title


def _run_command(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    words = shlex.split(line)
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(key, value)
    assert words[0] == "bitsweep", line
    args = words[1:]
    if args[0] == "train":
        args += ["--wandb-mode", "disabled"]
    assert bitsweep(args) == 0, line


@pytest.mark.slow
@pytest.mark.parametrize("title", [t for t, blocks in SECTIONS.items()
                                   if any(not name and lang in ("python", "sh")
                                          for lang, name, _ in blocks)])
def test_section_runs_as_written(title: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []
    for blocks in SECTIONS.values():
        for _, name, code in blocks:
            if name:
                (tmp_path / name).write_text(code)
                written.append(Path(name).stem)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    before = set(sys.modules)
    try:
        namespace: dict[str, object] = {"__name__": f"doc_{title.replace(' ', '_')}"}
        for lang, name, code in SECTIONS[title]:
            if name:
                continue
            if lang == "python":
                exec(compile(code, f"{DOC.name}: {title}", "exec"), namespace)
            elif lang == "sh":
                for line in filter(None, (raw.strip() for raw in code.splitlines())):
                    _run_command(line, monkeypatch)
    finally:
        for module in set(sys.modules) - before:
            if module.split(".")[0] in written:
                del sys.modules[module]
