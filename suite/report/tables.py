"""Tables as DataFrames of display strings, and their LaTeX (booktabs) and Markdown renderings.

The writers are local: pandas' to_markdown needs tabulate and Styler.to_latex needs jinja2, and
neither is worth a dependency for a rule-line table.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from suite.report.claims import NOT_TESTED, ClaimResult, share_text
from suite.report.frame import order_precisions, precision_bits
from suite.report.lrstress import (
    CENSORED,
    NO_LR_VARIATION,
    NONE,
    frontier_table,
    multiple_label,
    per_lr_multiples,
    stress_axes,
)
from suite.report.memory import analyse as analyse_memory
from suite.report.stats import ReportData, headline_slice, matched_gaps, summarize


class TableUnavailable(Exception):
    """The study lacks what the table needs; the message says what."""


def _fmt(v: float, digits: int = 1) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fmt_value(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def acc_header(data: ReportData) -> str:
    """The accuracy column's header, naming the metric (test_acc, val_acc, ...) so a reader can
    match it with what the sweep printed."""
    return f"{data.acc_col or 'accuracy'} (%)"


def _varying(data: ReportData) -> list[str]:
    runs = data.runs
    return [a for a in data.axes
            if a in ("model",) or (a in runs and runs[a].nunique(dropna=False) > 1)]


def summary_table(data: ReportData) -> pd.DataFrame:
    """Mean ± std (n) of accuracy per configuration, with the gap to fp32 and stability counts."""
    runs = data.runs
    if runs.empty:
        raise TableUnavailable("no completed runs")
    keys = _varying(data)
    acc = summarize(runs, [*data.axes, "precision"], "acc")
    gaps = matched_gaps(runs, data.axes)[[*data.axes, "precision", "gap", "gap_lo", "gap_hi"]]
    extra = (runs.assign(div=runs["diverged"].astype(float))
             .groupby([*data.axes, "precision"], dropna=False, sort=False)
             .agg(runs=("run_id", "size"), diverged=("div", "sum"),
                  spikes=("loss_spikes", "mean"), stored=("stored_bytes", "mean"))
             .reset_index())
    t = acc.merge(extra, on=[*data.axes, "precision"], how="outer")
    t = t.merge(gaps, on=[*data.axes, "precision"], how="left")
    order = {p: i for i, p in enumerate(order_precisions(t["precision"]))}
    t = t.assign(_o=t["precision"].map(order)).sort_values([*keys, "_o"], na_position="last")
    out = pd.DataFrame({k: t[k].map(_fmt_value) for k in keys})
    out["resolution"] = t["precision"].to_numpy()
    out["bits"] = [_fmt(precision_bits(p), 2) for p in t["precision"]]
    out["n"] = t["runs"].astype(int).to_numpy()
    out[acc_header(data)] = [f"{_fmt(m)} ± {_fmt(s)}" if n > 1 else _fmt(m)
                           for m, s, n in zip(t["mean"], t["std"], t["n"], strict=True)]
    # A difference of two accuracies lies in [-100, 100] points; a t interval of 2 seeds can
    # reach past that, and is cut there.
    out["gap to fp32 (pts)"] = [
        "–" if pd.isna(g) else (f"{g:+.1f} [{max(lo, -100):+.1f}, {min(hi, 100):+.1f}]"
                                if pd.notna(lo) else f"{g:+.1f}")
        for g, lo, hi in zip(t["gap"], t["gap_lo"], t["gap_hi"], strict=True)]
    out["diverged"] = [f"{int(d)}/{int(n)}" for d, n in zip(t["diverged"], t["runs"], strict=True)]
    out["loss spikes"] = t["spikes"].map(lambda v: _fmt(v, 2)).to_numpy()
    out["stored (KiB)"] = (t["stored"] / 1024).map(lambda v: _fmt(v, 1)).to_numpy()
    return out.reset_index(drop=True)


def budget_table(data: ReportData) -> tuple[pd.DataFrame, list[str]]:
    """Best resolution per model when weights may use at most B bits each."""
    runs = data.runs.dropna(subset=["acc"]) if len(data.runs) else data.runs
    if runs.empty:
        raise TableUnavailable("no completed run reports an accuracy")
    df, fixed = headline_slice(runs, data.axes)
    s = summarize(df, ["family", "precision"], "acc")
    kib = df.groupby(["family", "precision"], dropna=False)["stored_bytes"].mean() / 1024
    s = s.merge(kib.rename("kib").reset_index(), on=["family", "precision"], how="left")
    s["bits"] = [precision_bits(p) for p in s["precision"]]
    budgets = sorted({round(b, 2) for b in s["bits"] if np.isfinite(b)})
    rows = []
    for fam in sorted(s["family"].unique()):
        f = s[s["family"] == fam]
        ref = f.loc[f["precision"] == "fp32", "mean"]
        last = None
        for b in budgets:
            cand = f[f["bits"] <= b + 1e-9].dropna(subset=["mean"])
            if cand.empty:
                continue
            best = cand.loc[cand["mean"].idxmax()]
            if best["precision"] == last:
                continue  # a larger budget that buys nothing better adds no row
            last = best["precision"]
            gap = best["mean"] - ref.iloc[0] if len(ref) else float("nan")
            rows.append({
                "model": fam, "budget (bits/weight)": f"≤ {b:g}", "best resolution": last,
                acc_header(data): (f"{best['mean']:.1f} ± {_fmt(best['std'])}"
                                 if best["n"] > 1 else f"{best['mean']:.1f}"),
                "n": int(best["n"]),
                "gap to fp32 (pts)": "–" if math.isnan(gap) else f"{gap:+.1f}",
                "stored (KiB)": _fmt(best["kib"], 1),
            })
    return pd.DataFrame(rows), fixed


def _frontier_text(row: pd.Series) -> str:
    """"0.006 (3×)"; "≥ 0.06 (≥ 30×)" when censored (stable at every lr of the sweep);
    "< 0.002 (< 1×)" when not stable even at the smallest."""
    if row["frontier"] == NONE:
        return f"< {row['smallest']:g} (< 1×)"
    at = "≥ " if row["frontier"] == CENSORED else ""
    return f"{at}{row['max_stable_lr']:g} ({at}{multiple_label(row['max_stable_multiple'])}×)"


def max_stable_lr_table(data: ReportData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The max stable learning rate of every setting of an lr sweep (lrstress), for reading, and
    its numbers (tables/max_stable_lr.csv). Per lr multiple a cell holds the mean accuracy of
    the runs that did not diverge and, in parentheses, diverged/runs."""
    numbers = frontier_table(data)
    if numbers.empty:
        raise TableUnavailable(NO_LR_VARIATION)
    runs = data.runs
    keys = [a for a in stress_axes(data)
            if a in ("model", "dataset") or runs[a].nunique(dropna=False) > 1]
    order = {p: i for i, p in enumerate(order_precisions(numbers["precision"]))}
    numbers = (numbers.assign(_o=numbers["precision"].map(order))
               .sort_values([*keys, "_o"], na_position="last").drop(columns="_o")
               .reset_index(drop=True))
    out = pd.DataFrame({k: numbers[k].map(_fmt_value) for k in keys})
    out["resolution"] = numbers["precision"].to_numpy()
    out["max stable lr"] = [_frontier_text(r) for _, r in numbers.iterrows()]
    for m in per_lr_multiples(numbers):
        out[f"{m}×"] = [
            "–" if pd.isna(n) else f"{_fmt(a)} ({round(d * n)}/{int(n)})"
            for a, d, n in zip(numbers[f"acc_{m}x"], numbers[f"diverged_{m}x"],
                               numbers[f"runs_{m}x"], strict=True)]
    return out, numbers


def memory_winners_table(data: ReportData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The most accurate resolution at each budget of stored bytes (memory.analyse), per
    setting, with the runner-up and whether the two are distinguishable; and its numbers."""
    b = analyse_memory(data)
    if not b.widths:
        raise TableUnavailable("no width axis: every resolution was trained at one width, so "
                               "no resolution's accuracy can be read at equal stored bytes")
    w = b.winners
    if w.empty:
        raise TableUnavailable("no budget at which two resolutions are both measured")
    shown = [c for c in b.setting if c not in ("dataset", "model", "family") and
             w[c].nunique(dropna=False) > 1]
    out = pd.DataFrame({"model": w["family"].to_numpy()})
    for c in shown:
        out[c] = w[c].map(_fmt_value).to_numpy()
    out["budget (KiB)"] = w["budget_kib"].map(lambda v: f"{v:g}").to_numpy()
    out["best"] = w["best"].to_numpy()
    # an interval of 2-3 seeds can reach past 100%: cut there, as in the summary table
    out[f"{acc_header(data)} [95% CI]"] = [
        f"{m:.1f} [{max(lo, 0):.1f}, {min(hi, 100):.1f}]" if pd.notna(lo) else _fmt(m)
                             for m, lo, hi in zip(w["mean"], w["ci_lo"], w["ci_hi"], strict=True)]
    out["runner-up"] = [f"{p} ({_fmt(m)})" for p, m in
                        zip(w["runner_up"], w["runner_up_mean"], strict=True)]
    out["lead (pts)"] = [f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}]" if pd.notna(lo) else
                         (f"{d:+.1f}" if pd.notna(d) else "–")
                         for d, lo, hi in zip(w["lead"], w["lead_lo"], w["lead_hi"], strict=True)]
    out["distinguishable"] = w["distinguishable"].map(
        lambda v: "–" if v is None or v is pd.NA else ("yes" if v else "no")).to_numpy()
    out["measured"] = w["measured"].astype(int).to_numpy()
    return out, w


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per claim result, for reading: the claim, its estimate with 95% CI, the runs
    behind it, the verdict (e.g. "supported (fragile)" under FRAGILE_BELOW), how often it holds
    and why. The statistic and rule of each claim are stated once, in the rules section
    (``claims_rules_table`` on paper)."""
    rows = []
    for r in results:
        est = "–" if math.isnan(r.estimate) else (
            f"{r.estimate:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]")
        models = f" ({r.models})" if r.models else ""
        rows.append({
            "id": r.id, "claim": r.claim, "estimate [95% CI]": est,
            "data": (f"{r.strata} settings{models}, {r.n_a} vs {r.n_b} runs" if r.strata else "–"),
            "verdict": r.verdict + (" (fragile)" if r.fragile else ""),
            "holds": "–" if r.verdict == NOT_TESTED else share_text(r.holds), "why": r.reason,
        })
    return pd.DataFrame(rows)


def claims_rules_table(results: list[ClaimResult]) -> pd.DataFrame:
    """How each row of ``claims_table`` is decided: its statistic and verdict rule."""
    return pd.DataFrame([{"id": r.id, "statistic": r.statistic, "rule": r.rule} for r in results],
                        columns=["id", "statistic", "rule"])


UNFINISHED = ("failed", "retried", "pruned", "running")  # waiting trials are only counted


_RAGGED = ">{\\raggedright\\arraybackslash}p{%s}"
# Sized for a two-column paper's full width (table*, 17 cm text) in \\small type. Ids are ragged:
# a quantiser's or bnn reading's row is named after it ("C5 (conv_norm = chw)"); verdict and why
# are wide enough for their longest word ("inconclusive", "[−22.32,").
CLAIMS_TEX_FORMAT = (_RAGGED % "1.8cm" + _RAGGED % "2.6cm" + "l" + _RAGGED % "1.9cm"
                     + _RAGGED % "2.0cm" + "r" + _RAGGED % "2.3cm")
CLAIMS_RULES_FORMAT = _RAGGED % "1.8cm" + _RAGGED % "5.4cm" + _RAGGED % "8.6cm"


def failed_table(data: ReportData) -> pd.DataFrame:
    """Trials that did not give a result (waiting ones aside: a study in progress has many)."""
    res = data.frames.results
    bad = res[res["status"].isin(UNFINISHED)]
    cols = [c for c in ("trial", "run_id", "status", "attempt", "model", "precision", "augment",
                        "seed", "error") if c in bad]
    out = bad[cols].copy()
    if "error" in out:
        out["error"] = out["error"].map(lambda e: "" if e is None else str(e).splitlines()[0][:120])
    return out.astype(object).where(out.notna(), "").reset_index(drop=True)


# --- renderers -------------------------------------------------------------------------------

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
# < and > are not in the default (OT1) text font: they would print as ¡ and ¿.
_LATEX_SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "≤": r"$\leq$", "≈": r"$\approx$",
                  "×": r"$\times$", "–": "--", "≥": r"$\geq$", "<": r"$<$", ">": r"$>$"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in [*_LATEX_SPECIAL, *_LATEX_SYMBOLS]))


# Typography the escaping alone gets wrong: a minus sign before a number (not a hyphen), and
# powers such as 2^k (not a caret).
_MINUS_RE = re.compile(r"(?<![\w.])-(?=\d)")
_POWER_RE = re.compile(r"(\d)\^(\w+)")


def latex_escape(text: object) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(0)
        return _LATEX_SPECIAL.get(key) or _LATEX_SYMBOLS[key]

    parts = _POWER_RE.split(str(text))  # [text, base, exponent, text, ...]
    out = []
    for i, part in enumerate(parts):
        if i % 3 == 0:
            out.append(_LATEX_RE.sub(sub, _MINUS_RE.sub("\x00", part)).replace("\x00", "$-$"))
        elif i % 3 == 1:
            out.append(f"${part}^{{{parts[i + 1]}}}$")
    return "".join(out)


LONG_TABLE_ROWS = 40  # past this a float would run off the page: longtable breaks across pages


def to_latex(df: pd.DataFrame, caption: str, label: str,
             column_format: str | None = None, wide: bool = False,
             caption_tex: str = "") -> str:
    """A booktabs table (needs \\usepackage{booktabs}; wide tables use table*, long ones
    longtable, which needs \\usepackage{longtable}; ragged p-columns, \\usepackage{array}).
    ``caption_tex`` is appended to the escaped caption as LaTeX (e.g. a \\ref)."""
    if column_format is None:
        column_format = "".join("r" if _numeric_like(df[c]) else "l" for c in df.columns)
    header = " & ".join(latex_escape(c) for c in df.columns) + " \\\\"
    rows = [" & ".join(latex_escape(v) for v in row) + " \\\\"
            for row in df.itertuples(index=False)]
    cap = f"\\caption{{{latex_escape(caption)}{caption_tex}}}\\label{{{label}}}"
    if len(df) > LONG_TABLE_ROWS:
        return "\n".join([
            "{\\small", f"\\begin{{longtable}}{{{column_format}}}", cap + " \\\\",
            "\\toprule", header, "\\midrule", "\\endhead", *rows, "\\bottomrule",
            "\\end{longtable}", "}", ""])
    env = "table*" if wide else "table"
    return "\n".join([
        f"\\begin{{{env}}}[t]", "\\centering", "\\small",
        # Narrower column gaps in wide tables: ten columns fit a two-column page's full width.
        *(["\\setlength{\\tabcolsep}{4pt}"] if wide else []), cap,
        f"\\begin{{tabular}}{{{column_format}}}", "\\toprule", header, "\\midrule", *rows,
        "\\bottomrule", "\\end{tabular}", f"\\end{{{env}}}", ""])


def _numeric_like(col: pd.Series) -> bool:
    text = col.astype(str)
    return bool(len(text)) and text.str.fullmatch(r"[-+–]?[\d.,]+").all()


def to_markdown(df: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    align = "| " + " | ".join("---:" if _numeric_like(df[c]) else "---" for c in df.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, align, *body]) + "\n"
