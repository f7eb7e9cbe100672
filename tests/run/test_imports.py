"""Which modules import which: the run's layers import one way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _imported_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{statement}\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout
    return eval(out.strip().splitlines()[-1])  # a list literal of module names


def test_the_launcher_does_not_import_the_run_it_launches() -> None:
    """ranks.launch gets the function it runs; train imports ranks, never the other way (not
    even inside a function, where an import cycle hides)."""
    import ast

    import suite.run.ranks as ranks

    tree = ast.parse(Path(ranks.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert "suite.run.train" not in imported
    assert _imported_after("import suite.run.ranks", ("suite.run.train",)) == []


def test_the_names_of_models_data_and_quantisers_import_no_torch() -> None:
    names = ("suite.models.names", "suite.data.names", "suite.quant.names", "suite.run.files",
             "suite.plugins", "suite.run.config")
    assert _imported_after(f"import {', '.join(names)}", ("torch", "lightning")) == []
