"""Assemble reports/<study>/: the CSVs, every figure in three formats at two widths (7 in and
3.5 in), the tables, the claims, and report.md tying them together with the spec and the
provenance.

Nothing the study lacks stops the build: a figure or table that cannot be made is left out and
report.md says why under "Could not compute". Only an unexpected error inside a figure is reported
as such (with its message), so a bug does not hide behind a missing-data note.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from suite.report import style
from suite.report.claims import claims_frame, evaluate_claims, rules_markdown
from suite.report.figures import FIGURES, FigureOutput, Unavailable
from suite.report.frame import StudyFrames
from suite.report.lrstress import STABLE_ACC_MARGIN, run_max_stable_lr
from suite.report.stats import ReportData, prepare
from suite.report.summary import collapsed, summary_markdown
from suite.report.tables import (
    CLAIMS_RULES_FORMAT,
    CLAIMS_TEX_FORMAT,
    TableUnavailable,
    budget_table,
    claims_rules_table,
    claims_table,
    failed_table,
    max_stable_lr_table,
    memory_winners_table,
    summary_table,
    to_latex,
    to_markdown,
)
from suite.run.result import git_commit
from suite.sweep.storage import redact

INLINE_ROWS = 80  # longer tables are linked from report.md rather than printed in it
_PACKAGES = ("numpy", "pandas", "scipy", "matplotlib", "seaborn", "optuna", "torch")


def build_report(
    frames: StudyFrames,
    out_dir: Path,
    *,
    study: str,
    spec: dict | None = None,
    command: str | None = None,
    workers: int | None = None,
    cwd: str | None = None,
    formats: tuple[str, ...] = style.FORMATS,
    sweep_command: str | None = None,
) -> Path:
    """Write the report of ``frames`` into ``out_dir`` and return the path of report.md.

    ``command``: the command line that built it, ``cwd``: where it ran (relative paths in the
    command resolve there); both go to report.md. ``workers``: processes drawing figures
    (default: ``default_workers()``). ``formats``: which of PDF, SVG and PNG to write for each
    figure (report.md shows the PNG when there is one and links what was written).
    ``sweep_command``: the command that made (and resumes) the runs, when known.
    """
    out_dir = Path(out_dir)
    # Stale files from an earlier build of the same study would be shown as current. Figures
    # are the exception: their files are kept and rewritten only where their bytes change (a
    # rebuild of unchanged data leaves them as they were); stale ones go after drawing.
    shutil.rmtree(out_dir / "tables", ignore_errors=True)
    for sub in ("figures", "tables"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    spec = spec if spec is not None else frames.spec
    data = prepare(frames)
    job = _FigureJob(data, out_dir / "figures", formats,
                     workers if workers is not None else default_workers())
    _results_with_lr_limit(frames, data).to_csv(out_dir / "results.csv", index=False)
    frames.curves.to_csv(out_dir / "curves.csv", index=False)
    notes: list[str] = []
    if data.acc_col is None:
        notes.append("no completed run reports an accuracy (test_acc, val_acc or best_val_acc)")
    elif len(data.runs) and data.runs["acc"].isna().any():
        lost = data.runs[data.runs["acc"].isna()]
        n_div = int((lost["status"] == "diverged").sum())
        notes.append(f"{len(lost)} completed run(s) ({n_div} diverged) report no "
                     f"`{data.acc_col}`: left out of accuracy means, kept in stability counts")
    claims = evaluate_claims(data)
    claims_frame(claims).to_csv(out_dir / "tables" / "claims.csv", index=False)
    table_notes: list[str] = []
    tables = _tables(data, claims, out_dir / "tables", table_notes)
    figures = job.collect(notes)
    notes.extend(table_notes)
    for c in claims:
        if c.verdict == "inconclusive" and c.strata == 0:
            notes.append(f"claim {c.id} ({c.claim}): inconclusive, {c.reason}")

    md = _report_md(out_dir, frames, data, study, spec, command, cwd, figures, tables, claims,
                    notes, formats, sweep_command)
    path = out_dir / "report.md"
    path.write_text(md)
    return path


def _results_with_lr_limit(frames: StudyFrames, data: ReportData) -> pd.DataFrame:
    """results.csv: every run; ``collapsed`` where runs recorded top_class_share (summary);
    ``best_in_cell`` in a tuned study (the trial each cell is compared by, stats.Tuning); and
    last the max stable lr of its setting (lrstress; NaN outside an lr sweep and where not even
    the smallest lr was stable). Studies without those keep the columns they always had."""
    out = frames.results
    flag = collapsed(out)
    if flag is not None:
        out = out.assign(collapsed=flag)
    if data.tuning is not None:
        out = out.assign(best_in_cell=out["run_id"].isin(set(data.runs["run_id"])))
    limit = run_max_stable_lr(data)
    return out.assign(max_stable_lr=out["run_id"].map(limit).astype(float))


# --- figures and tables ----------------------------------------------------------------------


@dataclass
class _Drawn:
    """A saved figure as report.md needs it (the Figure itself stays in the worker)."""

    name: str
    title: str
    caption: str
    widths: tuple[str, ...] = ("",)  # the style.FIGURE_WIDTHS suffixes written
    paths: tuple[Path, ...] = ()


# (data, figure directory, formats): inherited by forked workers, never pickled
_JOB: tuple[ReportData, Path, tuple[str, ...]] | None = None


def _draw_one(task: tuple[int, str]) -> tuple[_Drawn | None, list[str]]:
    """Figure FIGURES[index] at the width of ``suffix``, saved as <name><suffix>.<fmt>."""
    assert _JOB is not None
    data, fig_dir, formats = _JOB
    index, suffix = task
    notes: list[str] = []
    with style.paper_style():
        out = _attempt(FIGURES[index], data, notes, style.FIGURE_WIDTHS[suffix])
        if out is None:
            return None, notes
        stem = style.figure_stem(out.name, suffix)
        try:
            paths = style.save_figure(out.fig, fig_dir / stem, formats)
        except Exception as exc:  # e.g. a full disk: say so in report.md, drop partial files
            for path in fig_dir.glob(f"{stem}.*"):
                path.unlink()
            notes.append(f"figure {stem}: ERROR while saving ({type(exc).__name__}: {exc})")
            return None, notes
    return _Drawn(out.name, out.title, out.caption, (suffix,), tuple(paths)), notes + out.notes


def default_workers() -> int:
    """Processes for drawing figures: BITSWEEP_REPORT_WORKERS, else up to 2 (the figures are
    few; rendering them three times each is what takes the time)."""
    env = os.environ.get("BITSWEEP_REPORT_WORKERS")
    if env and env.isdigit():
        return max(1, int(env))
    return max(1, min(2, os.cpu_count() or 1))


# Slowest first, so two workers finish together; the report keeps FIGURES order.
_COST_ORDER = ("stability", "learning_curves", "lr_stability", "gap_heatmap", "accuracy_vs_bits",
               "epochs_to_fp32", "memory_frontier")


class _FigureJob:
    """Draws every figure, in forked workers while the caller writes CSVs and tables, or in
    this process when there is one worker or no fork (macOS, Windows)."""

    def __init__(self, data: ReportData, fig_dir: Path, formats: tuple[str, ...],
                 workers: int):
        global _JOB
        _JOB = (data, fig_dir, formats)
        names = [f.__name__ for f in FIGURES]
        rank = {n: i for i, n in enumerate(_COST_ORDER)}
        self.fig_dir = fig_dir
        self.order = [(i, suffix) for i in sorted(range(len(FIGURES)),
                                                  key=lambda i: rank.get(names[i], len(rank)))
                      for suffix in style.FIGURE_WIDTHS]
        self.pool = None
        self.pending = None
        if workers > 1 and "fork" in mp.get_all_start_methods():
            try:
                # fork shares the prepared frames with the workers without pickling them.
                self.pool = mp.get_context("fork").Pool(min(workers, len(self.order)))
                self.pending = self.pool.map_async(_draw_one, self.order, chunksize=1)
            except OSError:
                self.pool = None

    def collect(self, notes: list[str]) -> list[_Drawn]:
        global _JOB
        try:
            if self.pool is not None and self.pending is not None:
                results = self.pending.get()
            else:
                results = [_draw_one(i) for i in self.order]
        finally:
            if self.pool is not None:
                self.pool.close()
                self.pool.join()
            _JOB = None
        by_task = dict(zip(self.order, results, strict=True))
        made = []
        written: set[Path] = set()
        for i in range(len(FIGURES)):
            drawn: _Drawn | None = None
            for suffix in style.FIGURE_WIDTHS:  # the 7 in version first: its caption is shown
                one, fig_notes = by_task[(i, suffix)]
                notes.extend(fig_notes)
                if one is None:
                    continue
                written.update(one.paths)
                drawn = one if drawn is None else dataclasses.replace(
                    drawn, widths=drawn.widths + one.widths, paths=drawn.paths + one.paths)
            if drawn is not None:
                made.append(drawn)
        for path in self.fig_dir.iterdir():  # figures (or formats) this build did not make
            if path.is_file() and path not in written:
                path.unlink()
        return made


def _attempt(make: Callable[..., FigureOutput], data: ReportData, notes: list[str],
             width: float) -> FigureOutput | None:
    name = make.__name__
    try:
        return make(data, width)
    except Unavailable as exc:
        notes.append(f"figure {name}: not drawn, {exc}")
    except Exception as exc:  # one broken figure must not cost the whole report
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        notes.append(f"figure {name}: ERROR while drawing ({tb})")
    return None


class _Table:
    def __init__(self, name: str, title: str, df: pd.DataFrame, caption: str,
                 numbers: pd.DataFrame | None = None):
        self.name, self.title, self.df, self.caption = name, title, df, caption
        self.numbers = numbers  # written as tables/<name>.csv beside the md and tex


def _lr_table(data: ReportData) -> _Table:
    df, numbers = max_stable_lr_table(data)
    return _Table(
        "max_stable_lr", "Max stable learning rate", df,
        "Where training breaks, per setting of the lr sweep (seeds pooled): the max stable lr is "
        "the largest lr such that at it and at every smaller lr of the sweep no seed diverged "
        f"and the mean accuracy is within {STABLE_ACC_MARGIN:g} points of the setting's best mean "
        "accuracy over its lrs; shown as an lr and as a multiple of the setting's smallest lr. "
        "≥: stable at every lr of the sweep, a censored value (the limit lies at or above the "
        "largest lr tried); <: not stable even at the smallest. Per lr multiple: mean accuracy "
        "(%) of the runs that did not diverge, and diverged/runs.",
        numbers)


def _tables(data: ReportData, claims, table_dir: Path, notes: list[str]) -> list[_Table]:
    acc = {"test_acc": "test", "val_acc": "final validation",
           "best_val_acc": "best validation"}.get(data.acc_col or "", "")
    out: list[_Table] = []
    try:
        out.append(_Table(
            "summary", "Per-configuration summary", summary_table(data),
            f"{acc.capitalize()} accuracy ({data.acc_col}) per configuration: mean ± std over "
            "seeds (n runs); gap "
            "to the fp32 runs of the same setting with its Welch 95% interval; diverged runs; "
            "mean validation-loss spikes; stored weight size.",
        ))
    except TableUnavailable as exc:
        notes.append(f"table summary: not made, {exc}")
    try:
        df, fixed = budget_table(data)
        held = f" Held fixed: {'; '.join(fixed)}." if fixed else ""
        out.append(_Table(
            "budget", "Best resolution under a memory budget", df,
            f"Most accurate resolution per model when each weight may take at most the given "
            f"number of bits (mean {acc} accuracy, {data.acc_col}, over seeds); a row appears "
            "only where a larger "
            f"budget changes the answer.{held}",
        ))
    except TableUnavailable as exc:
        notes.append(f"table budget: not made, {exc}")
    try:
        df, numbers = memory_winners_table(data)
        out.append(_Table(
            "memory_winners", "Best resolution at equal stored bytes", df,
            f"The most accurate resolution at each budget of stored bytes (the packed model: "
            f"quantised weights at their bits, the rest at fp32), per setting; each resolution's "
            f"{acc} accuracy ({data.acc_col}) at a budget is read off its own curve over widths, "
            "linear in log bytes between the two widths around the budget, never extrapolated "
            "(a budget outside the sizes a resolution was trained at does not count for it); "
            "mean over seeds with its 95% t interval; lead: best − runner-up with its Welch 95% "
            "interval, distinguishable when that excludes 0; measured: resolutions measured at "
            "the budget (at least 2).",
            numbers))
    except TableUnavailable as exc:
        notes.append(f"table memory_winners: not made, {exc}")
    try:
        out.append(_lr_table(data))
    except TableUnavailable as exc:
        notes.append(f"table max_stable_lr: not made, {exc}")
    out.append(_Table(
        "claims", "Claims of the papers against this study", claims_table(claims),
        "Each claim's statistic: difference in means over matched settings with a 95% CI (the "
        "wider of a seeded stratified bootstrap and a Welch t interval); the verdict follows "
        "the rule of its claim (each stated once, with its statistic, in the rules section); "
        f"accuracies are {data.acc_col or 'not reported'}; holds: the share of resamples that "
        "give the same verdict.",
    ))
    for t in out:
        (table_dir / f"{t.name}.md").write_text(to_markdown(t.df))
        if t.numbers is not None:
            t.numbers.to_csv(table_dir / f"{t.name}.csv", index=False)
        if t.name == "claims":
            # On paper the statistic and rule behind each row get a table of their own
            # (report.md states them once, in its rules section).
            (table_dir / "claims.tex").write_text(to_latex(
                t.df, t.caption, "tab:claims",
                column_format=CLAIMS_TEX_FORMAT, wide=True,
                caption_tex=" Statistics and rules: Table~\\ref{tab:claims_rules}."))
            (table_dir / "claims_rules.tex").write_text(to_latex(
                claims_rules_table(claims), "How each claim is decided: the statistic "
                "computed from the runs and the verdict rule (claims: Table", "tab:claims_rules",
                column_format=CLAIMS_RULES_FORMAT, wide=True,
                caption_tex="~\\ref{tab:claims})."))
            continue
        (table_dir / f"{t.name}.tex").write_text(
            to_latex(t.df, t.caption, f"tab:{t.name}", wide=len(t.df.columns) > 6))
    return out


# --- report.md -------------------------------------------------------------------------------


def _versions() -> str:
    parts = [f"python {platform.python_version()}"]
    for pkg in _PACKAGES:
        try:
            parts.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


def _distinct(results: pd.DataFrame, col: str) -> str:
    if col not in results:
        return "not recorded"
    vals = sorted({str(v) for v in results[col].dropna()})
    return ", ".join(f"`{v}`" for v in vals) if vals else "not recorded"


def _spec_text(frames: StudyFrames, spec: dict | None) -> str | None:
    """The study's spec as report.md shows it, a storage: URL's password hidden (a sweep file
    given to the report, or a study stored before sweeps hid it, still holds it)."""
    if frames.spec_yaml:
        return redact(frames.spec_yaml.rstrip())
    if spec is None:
        return None
    try:
        import yaml

        return redact(yaml.safe_dump(spec, sort_keys=False).rstrip())
    except Exception:  # a spec yaml cannot dump is still worth showing
        return redact(json.dumps(spec, indent=2, default=str))


def _report_md(out_dir, frames, data, study, spec, command, cwd, figures, tables, claims,
               notes, formats, sweep_command) -> str:
    res = frames.results
    counts = res["status"].value_counts().to_dict() if len(res) else {}
    count_text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = git_commit()
    lines = [
        f"# bitsweep report: {study}",
        "",
        f"Built {now}" + (f" with `{command}`" if command else "")
        + (f" in `{cwd}`." if cwd else "."),
        "",
        "## Summary",
        "",
        *summary_markdown(frames, data, claims),
        "",
        "## Provenance",
        "",
        f"- source: {frames.source or 'not recorded'}",
        *([f"- runs made by: `{sweep_command}` (the same command resumes the study; then "
           f"`{command}` rebuilds this report)"] if sweep_command and command else []),
        f"- runs: {len(res)} ({count_text}); accuracy used: "
        f"`{data.acc_col or 'none'}`, shown in percent points",
        f"- run code commit(s): {_distinct(res, 'git_commit')}; bitsweep version(s): "
        f"{_distinct(res, 'version')}; torch: {_distinct(res, 'torch_version')}; "
        f"device(s): {_distinct(res, 'device')}",
        f"- report built from commit: `{head}`" if head else
        "- report built from commit: unknown (not a git checkout or no commits yet)",
        f"- report packages: {_versions()}",
        f"- settings that tell configurations apart: {', '.join(data.axes) or 'none'}",
        "- files: [results.csv](results.csv) (one row per run), [curves.csv](curves.csv) "
        "(one row per run and epoch), [claims.csv](tables/claims.csv)",
        "",
        "## Could not compute",
        "",
    ]
    lines += [f"- {n}" for n in dict.fromkeys(notes)] or ["- nothing: every part was computed"]
    by_name = {t.name: t for t in tables}
    lines += ["", "## Claims", "", by_name["claims"].caption, "",
              to_markdown(by_name["claims"].df), "LaTeX: [tables/claims.tex](tables/claims.tex) and "
              "[tables/claims_rules.tex](tables/claims_rules.tex)",
              "", "## How the verdicts are decided", "", rules_markdown(),
              "", "## Figures", ""]
    if not figures:
        lines.append("No figure could be drawn (see above).")
    for f in figures:
        shown = "png" if "png" in formats else "svg" if "svg" in formats else None
        lines += [f"### {f.title}", ""]
        lines += [f"![{f.title}](figures/{f.name}.{shown})", ""] if shown else []
        lines += [f.caption, "", "Files: " + "; ".join(
            f"{style.FIGURE_WIDTHS[w]:g} in " + " · ".join(
                f"[{fmt.upper()}](figures/{style.figure_stem(f.name, w)}.{fmt})"
                for fmt in style.FORMATS if fmt in formats)
            for w in f.widths), ""]
    lines += ["## Tables", ""]
    for t in tables:
        if t.name == "claims":
            continue
        lines += [f"### {t.title}", "", t.caption, ""]
        if len(t.df) > INLINE_ROWS:
            lines.append(f"{len(t.df)} rows: see [tables/{t.name}.md](tables/{t.name}.md).")
        else:
            lines.append(to_markdown(t.df))
        lines += [f"LaTeX: [tables/{t.name}.tex](tables/{t.name}.tex)"
                  + (f"; numbers: [tables/{t.name}.csv](tables/{t.name}.csv)"
                     if t.numbers is not None else ""), ""]
    failed = failed_table(data)
    if len(failed):
        lines += ["## Runs that did not finish", "",
                  "Failed trials with their error (retried: a later attempt of the same slot "
                  "finished), pruned and still running ones; every run is in results.csv.", ""]
        if len(failed) > INLINE_ROWS:
            (out_dir / "tables" / "unfinished.md").write_text(to_markdown(failed))
            lines += [to_markdown(failed.head(INLINE_ROWS)),
                      f"... {len(failed) - INLINE_ROWS} more: see "
                      "[tables/unfinished.md](tables/unfinished.md).", ""]
        else:
            lines += [to_markdown(failed), ""]
    waiting = int((res["status"] == "waiting").sum())
    if waiting:
        lines += [f"{waiting} trial(s) still wait in the queue: this report shows a study in "
                  "progress.", ""]
    if frames.damaged:  # only when there is damage: reports of intact studies keep their bytes
        lines += ["## Damaged records", "", "Left out of every figure and table (their rows in "
                  "results.csv are failed, error `damaged`):", ""]
        lines += [f"- {d}" for d in frames.damaged] + [""]
    lines += ["## Study spec", ""]
    if len(frames.specs) > 1:  # extended with `bitsweep sweep --extend`: every spec it holds
        lines += [f"The study holds the runs of {len(frames.specs)} specs (extended with "
                  "`bitsweep sweep --extend`), oldest first:", ""]
        for i, one in enumerate(frames.specs, 1):
            lines += [f"### Spec {i}", "", "```yaml", redact(one.rstrip()), "```", ""]
    else:
        text = _spec_text(frames, spec)
        lines += ["```yaml", text, "```"] if text else ["No spec was stored with the study."]
    lines += ["", f"<!-- python {sys.version.split()[0]} -->", ""]
    return "\n".join(lines)
