"""`bitsweep report` on small REAL studies: real trainings (suite.run.train.train) stored in a real
Optuna study by the sweep storage contract, then the report built through suite.cli.main.

Two studies, trained once for the module (~45 tiny runs, ~20 s on 2 cores):
- "realsmall": fc and cnn on digits x fp32/1/2/2.32/bnn x augmentation none/standard x 2 seeds,
  2 epochs, read from its sweep file (storage: the default sqlite file under --runs).
- "thin", by name with --storage (a JournalStorage file): no fp32 runs, one seed, a run that
  really diverges (SGD at lr 1e4), a trial that crashes mid-training (FAIL with its error).

When suite/sweep/driver.py (the sweep driver) is present, "realsmall" is run through its run_sweep;
otherwise the same contract is written here with a real optimize loop (_optimize).
"""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import optuna
import pandas as pd
import pytest

from suite.cli import main
from suite.report import CURVE_COLUMNS, RESULT_COLUMNS, load_run_dirs
from suite.report.claims import SPECS, VERDICTS
from suite.report.figures import FIGURES, lr_stability, memory_frontier
from suite.report.style import FIGURE_WIDTHS, FORMATS, figure_stem
from suite.run.config import RunConfig, config_fields
from suite.run.result import CONTRACT_FIELDS
from suite.sweep.spec import load_spec

SPEC = """\
study: realsmall
description: report test, real tiny trainings on digits
fixed: {dataset: digits, epochs: 3, threads: 1}
grid:
  model: [fc, cnn]
  precision: [fp32, 1, 2, 2.32, bnn]
  augment: [none, standard]
  seed: [0, 1]
wandb: {mode: disabled}
"""

THIN_SPEC = """\
study: thin
description: missing pieces, no fp32, one seed, a diverged run, a crashed trial
fixed: {dataset: digits, epochs: 3, threads: 1, model: cnn}
grid:
  - {precision: [1, 2.32, bnn], seed: [0]}
  - {precision: ['1'], optimizer: [sgd], lr: [10000.0], seed: [1]}
  - {precision: ['2'], seed: [0]}
wandb: {mode: disabled}
"""
CRASH_PRECISION = "2"  # the thin study's trial that crashes mid-training

# The study sweeps no learning rate and no width: every figure but the lr-stress one and the
# equal-bytes one (which reads each resolution's curve over widths) is drawn.
DRAWN = tuple(f for f in FIGURES if f not in (lr_stability, memory_frontier))


class _Crash(Exception):
    pass


def _crash_callback():
    import lightning as L

    class Crash(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            raise _Crash("simulated crash after epoch 1 (out of memory)")

    return Crash()


def _read_curves(path: Path) -> list[dict]:
    """curves.csv rows as the sweep stores them: numbers, None for empty or NaN cells."""
    rows = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            out = {}
            for k, v in row.items():
                x = float(v) if v not in ("", None) else None
                out[k] = None if x is None or not math.isfinite(x) else x
            out["epoch"] = int(out["epoch"])
            rows.append(out)
    return rows


def _optimize(spec, storage, runs_root: Path, crash=frozenset()) -> None:
    """The storage contract of suite/sweep/driver.py, written by a real Optuna optimize loop: one trial
    per cell; user_attrs config/cell, then result/curves, or error on a crash (FAIL)."""
    from suite.run.train import train

    study = optuna.create_study(study_name=spec.study, storage=storage, direction="maximize")
    study.set_user_attr("spec", spec.raw)
    study.set_user_attr("spec_yaml", Path(spec.path).read_text())
    cells = list(spec.cells)

    def objective(trial: optuna.Trial) -> float:
        config: RunConfig = cells[trial.number]
        trial.set_user_attr("config", config.to_dict())
        trial.set_user_attr("cell", spec.key(config))
        out = runs_root / spec.study / f"trial-{trial.number:04d}"
        extra = [_crash_callback()] if config.precision in crash else []
        try:
            result = train(config, out, callbacks=extra, progress=False)
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        trial.set_user_attr("result", result)
        trial.set_user_attr("curves", _read_curves(out / "curves.csv"))
        value = result.get(spec.metric)
        return float(value) if value is not None and math.isfinite(value) else 0.0

    study.optimize(objective, n_trials=len(cells), catch=(_Crash,))


def _open(storage: str):
    """A storage URL, or a journal file path as Optuna's JournalStorage."""
    if "://" in storage:
        return storage
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))


def _sweep(spec_path: Path, runs_root: Path) -> str:
    spec = load_spec(spec_path)
    storage = spec.default_storage(runs_root)  # where `bitsweep report SPEC` will look
    (runs_root / spec.study).mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("suite.sweep") is not None:
        from suite.sweep import run_sweep

        run_sweep(spec, workers=1, runs_root=runs_root, threads=1)
    else:
        _optimize(spec, _open(storage), runs_root)
    return storage


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = tmp_path_factory.mktemp("real")
    sweeps, runs, reports = root / "sweeps", root / "runs", root / "reports"
    sweeps.mkdir()
    (sweeps / "realsmall.yaml").write_text(SPEC)
    (sweeps / "thin.yaml").write_text(THIN_SPEC)
    storage = _sweep(sweeps / "realsmall.yaml", runs)
    thin_log = runs / "thin" / "journal.log"
    thin_log.parent.mkdir(parents=True)
    thin_storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(thin_log)))
    _optimize(load_spec(sweeps / "thin.yaml"), thin_storage, runs,
              crash=frozenset({CRASH_PRECISION}))
    code = main(["report", str(sweeps / "realsmall.yaml"), "--runs", str(runs),
                 "--out", str(reports)])
    assert code == 0
    code = main(["report", "thin", "--storage", str(thin_log), "--out", str(reports)])
    assert code == 0
    return {"root": root, "sweeps": sweeps, "runs": runs, "storage": storage,
            "out": reports / "realsmall", "thin": reports / "thin", "thin_log": thin_log}


# --- the full small study ----------------------------------------------------------------------


def test_every_file_exists(real):
    out = real["out"]
    for name in ("results.csv", "curves.csv", "report.md", "tables/claims.csv"):
        assert (out / name).stat().st_size > 0, name
    for make in DRAWN:
        for fmt in FORMATS:
            assert (out / "figures" / f"{make.__name__}.{fmt}").stat().st_size > 1000
    for name in ("summary", "budget", "claims"):
        for ext in ("tex", "md"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0


def test_pngs_decode_are_not_blank_and_have_paper_widths(real):
    pngs = sorted((real["out"] / "figures").glob("*.png"))
    assert [p.stem for p in pngs] == sorted(figure_stem(f.__name__, w) for f in DRAWN
                                            for w in FIGURE_WIDTHS)  # 7 in and 3.5 in
    for png in pngs:
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 300, png.name
        gray = img[..., :3].mean(axis=2)
        assert gray.std() > 0.05, f"{png.name} looks blank"
        assert (gray < 0.5).mean() > 0.005, f"{png.name} has almost no ink"
        width_in = img.shape[1] / 300
        assert min(abs(width_in - 3.5), abs(width_in - 7.0)) < 0.02, png.name
    for pdf in (real["out"] / "figures").glob("*.pdf"):
        data = pdf.read_bytes()
        assert b"/FontFile2" in data and b"/Type3" not in data, pdf.name  # Type 42, embedded


def test_csvs_have_documented_columns_and_real_values(real):
    out = real["out"]
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert set(config_fields()) <= set(results.columns)  # every RunConfig field
    assert set(CONTRACT_FIELDS) <= set(results.columns)  # every RunResult contract metric
    assert len(results) == 40 and (results["status"] == "ok").all()
    assert results["git_commit"].notna().all() and results["torch_version"].notna().all()
    assert results["test_acc"].between(0, 1).all() and results["test_acc"].std() > 0
    assert (results.groupby("precision")["bits"].first().round(2).to_dict()
            == {"1": 1.0, "2": 2.0, "2.32": 2.32, "bnn": 1.0, "fp32": 32.0})
    assert results.loc[results["precision"] == "2.32", "zero"].all()
    assert not results.loc[results["precision"] == "2", "zero"].any()
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns[: len(CURVE_COLUMNS)]) == list(CURVE_COLUMNS)
    assert len(curves) == 40 * 3 and set(curves["epoch"]) == {1, 2, 3}
    assert curves["val_acc"].between(0, 1).all()
    # The run directories hold the same runs as the study.
    dirs = load_run_dirs([real["runs"] / "realsmall"]).results
    assert sorted(dirs["test_acc"].round(6)) == sorted(results["test_acc"].round(6))


def _column_spec(tex: str) -> str:
    """The {...} argument after \\begin{tabular} (or longtable), nested braces included."""
    m = re.search(r"\\begin\{(?:tabular|longtable)\}\{", tex)
    assert m, "no tabular"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(tex[i], 0)
        i += 1
    return tex[m.end(): i - 1]


def _check_tabular(tex: str) -> None:
    begins = re.findall(r"\\begin\{(\w+\*?)\}", tex)
    assert sorted(begins) == sorted(re.findall(r"\\end\{(\w+\*?)\}", tex))
    assert {"tabular", "longtable"} & set(begins)
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    header = tex[tex.index("\\toprule") + 8: tex.index("\\midrule")]
    body = tex[tex.index("\\midrule") + 8: tex.index("\\bottomrule")]
    cols = len(re.split(r"(?<!\\)&", header))
    spec = re.sub(r">\{[^}]*\}", "", _column_spec(tex))  # >{\raggedright...} prefixes
    assert len(re.findall(r"[lrc]|p\{[^}]*\}", spec)) == cols, spec
    for row in filter(None, (r.strip() for r in body.split("\\\\"))):
        assert len(re.split(r"(?<!\\)&", row)) == cols, row
    stripped = tex.replace("\\{", "").replace("\\}", "")
    assert stripped.count("{") == stripped.count("}")


def test_latex_tables_parse_and_compile(real, tmp_path):
    tables = sorted((real["out"] / "tables").glob("*.tex"))
    assert [t.stem for t in tables] == ["budget", "claims", "claims_rules", "summary"]
    for tex in tables:
        _check_tabular(tex.read_text())
    if not shutil.which("pdflatex"):
        return  # the issue asks for compilation only where a TeX is present; balance is checked
    inputs = "\n".join(f"\\input{{{p}}}" for p in tables)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs,longtable,array}\\usepackage[margin=1cm]"
        "{geometry}\\begin{document}" + inputs + "\\end{document}")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    # The claims tables are sized for a two-column paper's full text width: no overfull box.
    claims = [p for p in tables if p.stem.startswith("claims")]
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\\usepackage{booktabs,longtable,array}"
        "\\usepackage[margin=2cm]{geometry}\\begin{document}"
        + "\n".join(f"\\input{{{p}}}" for p in claims) + "\\end{document}")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "Overfull \\hbox" not in run.stdout, run.stdout[-2000:]


def test_claims_table_has_a_verdict_per_claim(real):
    claims = pd.read_csv(real["out"] / "tables" / "claims.csv").set_index("id")
    assert list(claims.index) == list(SPECS)
    assert claims["verdict"].isin(VERDICTS).all()
    assert claims["rule"].str.len().gt(20).all() and claims["reason"].str.len().gt(5).all()
    # 2 seeds of matched settings: these claims have data behind them.
    for cid in ("C1", "C3", "C4", "C5"):
        assert claims.loc[cid, "strata"] > 0, cid
        assert claims.loc[cid, "ci_low"] <= claims.loc[cid, "estimate"] <= claims.loc[cid,
                                                                                    "ci_high"]
    assert claims.loc["C2", "verdict"] == "not tested"
    assert "width" in claims.loc["C2", "reason"]  # one model size: says so


def test_report_md_records_command_commit_spec_and_rules(real):
    md = (real["out"] / "report.md").read_text()
    cmd = (f"bitsweep report {real['sweeps'] / 'realsmall.yaml'} --out {real['root'] / 'reports'}"
           f" --runs {real['runs']}")
    assert cmd in md
    assert f"runs made by: `bitsweep sweep {real['sweeps'] / 'realsmall.yaml'} --runs " \
           f"{real['runs']}`" in md  # the command that resumes the study
    assert re.search(r"report built from commit: `[0-9a-f]{40}`", md)
    assert "precision: [fp32, 1, 2, 2.32, bnn]" in md  # the spec as stored with the study
    assert "## How the verdicts are decided" in md
    for spec in SPECS.values():
        assert spec.test.interval_rule in md  # once, "as C1" for the claims that share it
    for make in DRAWN:
        assert f"figures/{make.__name__}.png" in md
    assert "figure memory_frontier: not drawn, no width axis" in md  # and it says why
    assert "ERROR" not in md
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (real["out"] / link).exists(), link


# --- the study with missing pieces ------------------------------------------------------------


def test_thin_study_builds_and_says_what_is_missing(real):
    out = real["thin"]
    results = pd.read_csv(out / "results.csv")
    assert results["status"].value_counts().to_dict() == {"ok": 3, "diverged": 1, "failed": 1}
    failed = results[results["status"] == "failed"].iloc[0]
    assert "simulated crash" in failed["error"] and failed["precision"] == CRASH_PRECISION
    diverged = results[results["status"] == "diverged"].iloc[0]
    assert diverged["diverged_epoch"] == 1 and pd.isna(diverged["test_acc"])
    md = (out / "report.md").read_text()
    assert "bitsweep report thin --storage" in md
    section = md.split("## Could not compute")[1].split("## Claims")[0]
    for expected in ("gap_heatmap: not drawn, no fp32 runs",
                     "epochs_to_fp32: not drawn, no fp32 runs",
                     "one seed per configuration", "no 32-bit reference line",
                     "(1 diverged) report no `test_acc`"):
        assert expected in section, expected
    summary = md.split("## Summary")[1].split("## Provenance")[0]
    assert "not tested by this study's design: C1, C5 (no fp32 runs)" in summary
    assert "## Runs that did not finish" in md and "simulated crash" in md
    assert "ERROR" not in md
    claims = pd.read_csv(out / "tables" / "claims.csv").set_index("id")
    assert claims["verdict"].isin(["inconclusive", "not tested"]).all()
    assert claims["reason"].str.len().gt(5).all()
    assert claims.loc["C1", "reason"] == claims.loc["C5", "reason"] == "no fp32 runs"
    assert "fewer than 2 runs per side" in claims.loc["C4", "reason"] or \
        "no setting holds both" in claims.loc["C4", "reason"]
    for png in (out / "figures").glob("*.png"):
        assert mpimg.imread(png)[..., :3].std() > 0.05, png.name


# --- bad input: exit 2 with a message that says what to do ------------------------------------


def test_missing_sweep_file(real, capsys):
    assert main(["report", str(real["root"] / "nope.yaml")]) == 2
    assert "no such sweep file" in capsys.readouterr().err


def test_spec_without_storage_says_how_to_create_it(real, tmp_path, capsys):
    spec = tmp_path / "fresh.yaml"
    spec.write_text(SPEC.replace("realsmall", "fresh"))
    runs = tmp_path / "runs"
    assert main(["report", str(spec), "--runs", str(runs), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"bitsweep sweep {spec}" in err and "no study storage" in err
    assert not runs.exists() and not (tmp_path / "r").exists()  # nothing written


def test_unknown_study_names_the_studies_there(real, tmp_path, capsys):
    code = main(["report", "nosuch", "--storage", real["storage"], "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "no study 'nosuch'" in err and "realsmall" in err and "bitsweep sweep" in err
    assert not list(tmp_path.iterdir())


def test_a_study_without_trials_says_how_to_fill_it_and_writes_nothing(tmp_path, capsys):
    import optuna

    from suite.sweep.storage import open_storage

    journal = tmp_path / "empty.journal"
    optuna.create_study(study_name="empty", storage=open_storage(str(journal)))
    assert main(["report", "empty", "--storage", str(journal), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "study 'empty'" in err and "has no trials yet" in err and "bitsweep sweep" in err
    assert not (tmp_path / "r").exists()


def test_study_name_without_storage(real, tmp_path, capsys):
    assert main(["report", "nosuch", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--storage" in err and "bitsweep sweep" in err


def test_study_name_finds_default_storage(real, tmp_path):
    """`bitsweep report realsmall --runs R` reads R/realsmall/optuna.db."""
    code = main(["report", "realsmall", "--runs", str(real["runs"]), "--out", str(tmp_path)])
    assert code == 0
    assert pd.read_csv(tmp_path / "realsmall" / "results.csv").shape[0] == 40


def test_formats_writes_only_those_and_report_md_links_only_them(real, tmp_path):
    code = main(["report", "realsmall", "--runs", str(real["runs"]), "--out", str(tmp_path),
                 "--formats", "png,pdf"])
    assert code == 0
    out = tmp_path / "realsmall"
    assert {p.suffix for p in (out / "figures").iterdir()} == {".png", ".pdf"}
    md = (out / "report.md").read_text()
    assert "--formats png,pdf" in md  # the recorded command rebuilds the same files
    assert ".svg" not in md and "](figures/accuracy_vs_bits.pdf)" in md
    # Same storage, same tables: the rebuilt report matches the full one.
    for name in ("summary.md", "claims.csv"):
        assert (out / "tables" / name).read_text() == (real["out"] / "tables" / name).read_text()


def test_unknown_format_is_refused_before_writing(real, tmp_path, capsys):
    code = main(["report", "realsmall", "--runs", str(real["runs"]), "--out", str(tmp_path),
                 "--formats", "png,jpeg"])
    assert code == 2
    assert "'png,jpeg'" in capsys.readouterr().err and not (tmp_path / "realsmall").exists()
