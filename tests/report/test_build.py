"""A full report built from a synthetic study held in a real Optuna SQLite storage."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image as mpimg
import optuna
import pandas as pd
import pytest

from suite.report import CURVE_COLUMNS, RESULT_COLUMNS, build_report, load_study
from suite.report.claims import SPECS, VERDICTS
from suite.report.figures import FIGURES, lr_stability
from suite.report.style import FIGURE_WIDTHS, FORMATS
from suite.report.synthetic import add_to_study, synthetic_records

SPEC_YAML = """\
study: demo
models: [fc, cnn, lm]
resolutions: [fp32, bnn, 1, 1.58, 2, 2.32, 3, 3.17, 4, 4.09]
augment: [none, standard]
seeds: [0, 1, 2]
"""

# The study sweeps no learning rate: every figure but the lr-stress one is drawn.
DRAWN = tuple(f for f in FIGURES if f is not lr_stability)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("full")
    url = f"sqlite:///{root / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="demo", storage=url, direction="maximize")
    records = synthetic_records(models=("fc", "cnn", "lm"), widths={"cnn": (16, 32)}, failed=1)
    add_to_study(study, records)
    study.set_user_attr("spec_yaml", SPEC_YAML)
    study.set_user_attr("spec", {"study": "demo", "seeds": [0, 1, 2]})
    frames = load_study("demo", url)
    out = root / "reports" / "demo"
    report = build_report(frames, out, study="demo", command="bitsweep report sweeps/demo.yaml")
    return frames, out, report, len(records)


def test_frames_from_real_storage(built):
    frames, _, _, n_records = built
    assert len(frames.results) == n_records
    assert {"ok", "failed"} <= set(frames.results["status"]) <= {"ok", "diverged", "failed"}
    assert frames.spec == {"study": "demo", "seeds": [0, 1, 2]}
    assert frames.spec_yaml == SPEC_YAML
    failed = frames.results[frames.results["status"] == "failed"]
    assert len(failed) == 1 and "out of memory" in failed["error"].iloc[0]
    assert failed["model"].iloc[0] == "fc"  # config fills what a failed trial's result lacks


def test_every_file_exists(built):
    _, out, report, _ = built
    assert report == out / "report.md"
    for name in ("results.csv", "curves.csv", "report.md"):
        assert (out / name).stat().st_size > 0
    for make in DRAWN:
        for fmt in FORMATS:
            path = out / "figures" / f"{make.__name__}.{fmt}"
            assert path.stat().st_size > 1000, path
    for name in ("summary", "budget", "claims"):
        for ext in ("tex", "md"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0


def test_pngs_decode_and_are_not_blank(built):
    _, out, _, _ = built
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == len(DRAWN) * len(FIGURE_WIDTHS)  # each at 7 in and 3.5 in
    for png in pngs:
        img = mpimg.imread(png)
        assert img.ndim == 3 and img.shape[0] > 500 and img.shape[1] > 900, png
        gray = img[..., :3].mean(axis=2)
        assert gray.std() > 0.05, f"{png.name} looks blank"
        assert (gray < 0.5).mean() > 0.005, f"{png.name} has almost no ink"


def test_pdfs_embed_truetype_fonts(built):
    _, out, _, _ = built
    pdf = (out / "figures" / "accuracy_vs_bits.pdf").read_bytes()
    assert b"/FontFile2" in pdf  # fonttype 42: TrueType embedded, not Type 3
    assert b"/Type3" not in pdf


def test_figures_have_paper_widths(built):
    _, out, _, _ = built
    for png in (out / "figures").glob("*.png"):
        width_in = mpimg.imread(png).shape[1] / 300
        assert min(abs(width_in - 3.5), abs(width_in - 7.0)) < 0.05, png.name


def test_csvs_have_documented_columns(built):
    frames, out, _, n_records = built
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert len(results) == n_records
    assert {"batch_size"} <= set(results.columns)  # config fields beyond the contract kept
    assert results["status"].isin(["ok", "diverged", "failed"]).all()
    assert results.columns[-1] == "max_stable_lr" and results["max_stable_lr"].isna().all()
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns[: len(CURVE_COLUMNS)]) == list(CURVE_COLUMNS)
    assert len(curves) == len(frames.curves) > 0
    assert curves["epoch"].min() == 1


def _check_tabular(tex: str) -> None:
    begins = re.findall(r"\\begin\{(\w+\*?)\}", tex)
    ends = re.findall(r"\\end\{(\w+\*?)\}", tex)
    assert sorted(begins) == sorted(ends)
    assert "tabular" in begins or "longtable" in begins
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    body = tex[tex.index("\\midrule") + 8: tex.index("\\bottomrule")]
    header = tex[tex.index("\\toprule") + 8: tex.index("\\midrule")]
    cols = len(re.split(r"(?<!\\)&", header))
    for row in filter(None, (r.strip() for r in body.split("\\\\"))):
        assert len(re.split(r"(?<!\\)&", row)) == cols, row
    # braces balance outside escaped ones
    stripped = tex.replace("\\{", "").replace("\\}", "")
    assert stripped.count("{") == stripped.count("}")


def test_latex_tables_are_balanced_booktabs(built, tmp_path):
    _, out, _, _ = built
    for tex_path in (out / "tables").glob("*.tex"):
        _check_tabular(tex_path.read_text())
    if shutil.which("pdflatex"):
        doc = tmp_path / "doc.tex"
        inputs = "\n".join(f"\\input{{{p}}}" for p in sorted((out / "tables").glob("*.tex")))
        doc.write_text("\\documentclass{article}\\usepackage{booktabs,longtable,array}"
                       "\\usepackage[margin=1cm]"
                       "{geometry}\\begin{document}" + inputs + "\\end{document}")
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                       cwd=tmp_path, check=True, capture_output=True, timeout=120)


def test_claims_table_has_a_verdict_per_claim(built):
    _, out, _, _ = built
    claims = pd.read_csv(out / "tables" / "claims.csv")
    assert list(claims["id"]) == list(SPECS)
    assert claims["verdict"].isin(VERDICTS).all()
    assert claims["rule"].str.len().gt(20).all()
    decided = claims[~claims["verdict"].isin(["inconclusive", "not tested"])]
    assert decided["ci_low"].notna().all() and (decided["ci_low"] <= decided["ci_high"]).all()
    md = (out / "tables" / "claims.md").read_text()
    assert md.count("\n") == len(SPECS) + 2


def test_report_md_shows_everything(built):
    _, out, report, _ = built
    md = report.read_text()
    for make in DRAWN:
        assert f"figures/{make.__name__}.png" in md
    for part in ("## Provenance", "## Claims", "## Figures", "## Tables", "## Study spec",
                 "bitsweep report sweeps/demo.yaml", "pandas ", "seaborn ", "0000000synthetic",
                 "resolutions: [fp32, bnn", "## Runs that did not finish", "out of memory"):
        assert part in md, part
    assert "ERROR" not in md
    assert "figure lr_stability: not drawn, fewer than 2 learning rates per setting" in md
    assert "table max_stable_lr: not made, no learning-rate variation" in md
    # every linked file exists
    for link in re.findall(r"\]\(([^)]+)\)", md):
        assert (out / link).exists(), link


def test_fp32_last_and_fixed_colours(built):
    from suite.report.style import PRECISION_COLORS, color_for

    frames, _, _, _ = built
    from suite.report import order_precisions

    order = order_precisions(frames.results["precision"])
    assert order[0] == "bnn" and order[1] == "1" and order[-1] == "fp32"
    assert len({color_for(p) for p in order}) == len(order)
    assert all(color_for(p) == PRECISION_COLORS[p] for p in order)
    assert color_for("N=7") == color_for("N=7")


def test_summary_numbers_match_results(built):
    from suite.report.stats import prepare
    from suite.report.tables import summary_table

    frames, _, _, _ = built
    table = summary_table(prepare(frames))
    row = table[(table["model"] == "cnn") & (table["width"] == "16") &
                (table["augment"] == "none") & (table["resolution"] == "2.32")].iloc[0]
    runs = frames.results[(frames.results["model"] == "cnn") & (frames.results["width"] == 16) &
                          (frames.results["augment"] == "none") &
                          (frames.results["precision"] == "2.32")]
    assert row["n"] == len(runs) == 3
    assert row["test_acc (%)"].startswith(f"{runs['test_acc'].mean() * 100:.1f} ± ")
    assert row["stored (KiB)"] == f"{runs['stored_bytes'].mean() / 1024:.1f}"
