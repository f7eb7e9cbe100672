"""The committed reference reports were produced by this code from their committed study storage:
rebuilding each from reports/<study>/optuna.journal.gz gives the same tables and results, byte for
byte (issue 8's "rerunning `bitsweep report` on the same storage reproduces the tables")."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from suite.cli import main

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("default", "fashion-mnist", "stability", "memory")


@pytest.mark.parametrize("study", STUDIES)
def test_committed_report_is_rebuilt_identically_from_its_storage(study, tmp_path):
    committed = ROOT / "reports" / study
    packed = committed / "optuna.journal.gz"
    assert packed.is_file(), f"{packed} missing: the reference study's storage is committed"
    journal = tmp_path / "optuna.journal"  # Optuna reads journals uncompressed
    journal.write_bytes(gzip.decompress(packed.read_bytes()))
    before = journal.read_bytes()
    code = main(["report", study, "--storage", str(journal), "--out", str(tmp_path / "out"),
                 "--formats", "png"])
    assert code == 0
    rebuilt = tmp_path / "out" / study
    files = ["results.csv", "curves.csv",
             *(f"tables/{p.name}" for p in sorted((committed / "tables").iterdir()))]
    assert len(files) > 8
    for name in files:
        assert (rebuilt / name).read_bytes() == _committed_bytes(committed / name), name
    assert {p.name for p in (rebuilt / "figures").iterdir()} == \
        {p.with_suffix(".png").name for p in (committed / "figures").glob("*.png")}
    assert journal.read_bytes() == before  # a report never writes to the storage


def _committed_bytes(path: Path) -> bytes:
    """A committed file as the report writes it; one too large for the repository is committed
    gzipped beside its name (the stability study's curves.csv)."""
    if path.is_file():
        return path.read_bytes()
    return gzip.decompress(path.with_name(path.name + ".gz").read_bytes())


def test_committed_memory_study_compares_quantisers_at_equal_stored_bytes():
    """The equal-memory study: two quantisers and both keep_fp32 values ran, each run's stored
    bytes are its packed file's (what `bitsweep pack` reports), and every memory claim has a
    decided row per family and quantiser, plus the pooled one."""
    committed = ROOT / "reports" / "memory"
    runs = pd.read_csv(committed / "results.csv")
    assert (runs["state"] == "COMPLETE").all()
    quantised = runs[~runs["precision"].astype(str).isin(["fp32", "bnn"])]
    assert set(quantised["scale_rule"]) == {"gauss", "seq"}
    assert set(runs["keep_fp32"]) == {"none", "ends"}
    assert runs["packed_bytes"].notna().all()
    assert (runs["stored_bytes"] == runs["packed_bytes"]).all()
    claims = pd.read_csv(committed / "tables" / "claims.csv")
    families = {f"{m} ({d})" for m, d in zip(runs["model"], runs["dataset"], strict=True)}
    for claim in ("C1-mem", "C6", "C7"):
        rows = claims[claims["id"].str.startswith(f"{claim} (")]
        expected = {f"{claim} ({f}, scale_rule = {q})" for f in families for q in ("gauss", "seq")}
        assert set(rows["id"]) == expected | {f"{claim} (pooled)"}, claim
        assert not (rows["verdict"] == "not tested").any(), claim
        assert rows["holds"].between(0, 1).all(), claim
