"""Run directories <-> packed model files: ``bitsweep pack`` / ``bitsweep unpack`` and a loader.

``pack_run`` rebuilds a trained model from its run directory (``model.json`` + the fp32 shadow
weights in ``model.safetensors``, as ``suite.run.train`` writes them) and stores it in the packed
format of :mod:`suite.pack.format` (every quantised tensor as level indices near log2(N) bits per
weight plus its grid step, everything else as it is, a versioned JSON header, no pickle).

``load_packed_model`` turns a packed file back into an inference model (eval mode, quantised
layers frozen on the stored grid values); ``unpack_file`` does that, runs one forward pass as a
check, and can write the dequantised weights as safetensors.

Anything unusable (a missing run directory, a truncated or corrupted file, a spec the code no
longer builds) raises :class:`~suite.pack.format.PackError`, a ValueError, which the CLI reports
with exit code 2.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from suite.models.user import logits_of
from suite.pack.format import (
    PackError,
    PackStats,
    layer_rows,
    packed_to_model,
    read_packed,
    save_packed,
)
from suite.run.files import CONFIG_NAME, PACKED_NAME, SPEC_NAME, WEIGHTS_NAME

RUN_FILES = (SPEC_NAME, WEIGHTS_NAME)  # what pack needs; config.json rides along if there


# The header key under which BitsweepQAT (suite/run/qat.py) records how a user's module was
# quantised; such a file holds no model spec.
QAT_META_KEY = "bitsweep_qat"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(f"{path}: cannot read it as JSON: {exc}") from exc


def _build(spec: Any, where: str) -> nn.Module:
    from suite.models import model_from_spec

    if not isinstance(spec, dict):
        raise PackError(f"{where}: the model spec must be a JSON object, got {type(spec).__name__}")
    try:
        return model_from_spec(spec)
    except (ValueError, TypeError, KeyError) as exc:
        raise PackError(f"{where}: cannot rebuild the model from its spec: {exc}") from exc


def load_run_model(run_dir: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any],
                                                             dict[str, Any] | None]:
    """``(model, spec, config)`` of a run directory: the fake-quantised model as trained (eval
    mode), its model spec and its RunConfig dict (None when config.json is absent)."""
    run = Path(run_dir)
    if not run.exists():
        raise PackError(f"run directory {run} does not exist")
    if not run.is_dir():
        raise PackError(f"{run} is not a run directory (a directory written by `bitsweep train`)")
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        raise PackError(f"{run} is not a complete run directory: {', '.join(missing)} missing "
                        f"(`bitsweep train --out DIR` writes {', '.join(RUN_FILES)})")
    spec = _load_json(run / SPEC_NAME)
    config = _load_json(run / CONFIG_NAME) if (run / CONFIG_NAME).is_file() else None
    model = _build(spec, str(run / SPEC_NAME))
    weights = run / WEIGHTS_NAME
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a bad file
        raise PackError(f"{weights}: not a readable safetensors file: {exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise PackError(f"{weights} does not fit the model in model.json: {exc}") from exc
    return model.eval(), spec, config


def _stats_row(stats: PackStats) -> dict[str, Any]:
    # "levels" is a run's N in result.json: here it is the packed elements per N, named so.
    d = stats.as_dict()
    per_level = d.pop("levels")
    return {**d, "elements_per_level": per_level}


def pack_run(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
             ) -> dict[str, Any]:
    """Pack a run directory's model into ``out`` (default ``RUN_DIR/model.bsw``); returns one flat
    dict of sizes: ``file_bytes``, ``fp32_state_bytes`` (the state_dict at 4 bytes per float),
    ``fp32_file_bytes`` (the run's model.safetensors), ``params_quantized``, ``bits_per_weight``
    (index streams only, comparable with log2 N; 32.0 when nothing is quantised),
    ``entropy_bits_per_weight``, ``packed_compression`` (fp32_state_bytes / file_bytes, result.json's
    field of that name) and ``compression_vs_fp32_file``; and the memory accounting result.json
    records, from the same function: ``fp32_bytes``, ``quantized_bytes``, ``compression``."""
    run = Path(run_dir)
    model, spec, config = load_run_model(run)
    meta: dict[str, Any] = {"model_spec": spec}
    if config is not None:
        meta["config"] = config  # the same meta train.py writes, so the files are identical
    path = Path(out) if out is not None else run / PACKED_NAME
    if path.resolve() in {(run / name).resolve() for name in (*RUN_FILES, CONFIG_NAME)}:
        raise PackError(f"--out {path} would overwrite the run's own {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    stats = save_packed(model, path, meta)
    written = read_packed(path)  # read back: checksums, header and every index stream decode
    fp32_file = (run / WEIGHTS_NAME).stat().st_size
    res = spec.get("qconfig", {}).get("resolution")
    return {
        "file": str(path),
        "model": spec.get("name"),
        "precision": res,
        "params": sum(p.numel() for p in model.parameters()),
        **_stats_row(stats),
        **_accounting(model),
        "fp32_file_bytes": fp32_file,
        "compression_vs_fp32_file": fp32_file / stats.file_bytes,
        # per layer at its packed bytes ("layers" is the run's layer rules in result.json)
        "packed_layers": layer_rows(model, written.entries),  # name, type, params, res., bits, bytes
    }


def _accounting(model: nn.Module) -> dict[str, float]:
    from suite.quant.summary import param_summary

    summary = param_summary(model).as_dict()
    return {k: summary[k] for k in ("fp32_bytes", "quantized_bytes", "compression")}


def _packed_path(file: str | os.PathLike[str]) -> Path:
    path = Path(file)
    if path.is_dir():  # a run directory: its packed model
        path = path / PACKED_NAME
    if not path.is_file():
        raise PackError(f"packed file {path} does not exist")
    return path


def _spec_of(meta: dict[str, Any], source: Path) -> dict[str, Any]:
    spec = meta.get("model_spec")
    if not isinstance(spec, dict) and QAT_META_KEY in meta:
        raise PackError(f"{source}: written by BitsweepQAT for a user's own module, whose "
                        "architecture the file does not hold; load it in Python with "
                        "suite.BitsweepQAT.load(path, module), the module built as for the fit")
    if not isinstance(spec, dict):
        raise PackError(f"{source}: the header has no model_spec, so the architecture is unknown "
                        f"(files from `bitsweep pack` and `bitsweep train` carry one)")
    return spec


def load_packed_model(file: str | os.PathLike[str]) -> nn.Module:
    """An inference model from a packed file: built from the header's model spec, loaded with the
    stored grid values (no pickle), quantised layers frozen, eval mode. Its logits equal those
    of the fake-quantised model that was packed, within float rounding."""
    path = _packed_path(file)
    return packed_to_model(path, lambda meta: _build(_spec_of(meta, path), str(path)))


def example_input(spec: dict[str, Any], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded input the model of ``spec`` accepts: images (B, C, H, W) or tokens (B, T)."""
    g = torch.Generator().manual_seed(seed)
    shape = tuple(spec["input_shape"])
    if spec.get("task") == "text":
        return torch.randint(0, int(spec["num_classes"]), (batch, shape[0]), generator=g)
    return torch.randn(batch, *shape, generator=g)


def _write_dequantized(state: dict[str, torch.Tensor], spec: dict[str, Any], out: Path) -> None:
    from suite.pack.weights import save_weights

    seen: set[int] = set()
    tensors = {}
    for key, t in state.items():  # tied tensors: safetensors stores no shared memory
        tensors[key] = t.clone().contiguous() if id(t) in seen else t.contiguous()
        seen.add(id(t))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    save_weights(tensors, tmp, metadata={"format": "bitsweep-dequantized",
                                         "model_spec": json.dumps(spec)})
    os.replace(tmp, out)


def unpack_file(file: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
                ) -> dict[str, Any]:
    """Rebuild the model of a packed file, check it runs, optionally write its dequantised
    weights (grid values; safetensors, the model spec in the metadata) to ``out``.

    When the file sits in its run directory (next to model.json and model.safetensors of the
    same model), the logits are also compared with the fake-quantised model's:
    ``max_abs_logit_diff`` (else null).
    """
    path = _packed_path(file)
    packed = read_packed(path)
    spec = _spec_of(packed.meta, path)
    model = packed_to_model(packed, lambda meta: _build(spec, str(path)))
    x = example_input(spec)
    with torch.no_grad():
        y = logits_of(model(x))  # a user model may return an object with .logits
    if not torch.isfinite(y).all():
        raise PackError(f"{path}: the rebuilt model gives non-finite outputs")
    diff = None
    run = path.parent
    if all((run / f).is_file() for f in RUN_FILES) and _load_json(run / SPEC_NAME) == spec:
        reference, _, _ = load_run_model(run)
        with torch.no_grad():
            diff = float((logits_of(reference(x)) - y).abs().max())
    stats = packed.stats()
    row: dict[str, Any] = {
        "file": str(path),
        "model": spec.get("name"),
        "precision": spec.get("qconfig", {}).get("resolution"),
        "params": sum(p.numel() for p in model.parameters()),
        **_stats_row(stats),
        "loads": True,
        "output_shape": list(y.shape),
        "max_abs_logit_diff": diff,
        "out": None,
    }
    if out is not None:
        _write_dequantized(packed.state_dict(), spec, Path(out))
        row["out"] = str(out)
    if diff is not None and not math.isfinite(diff):
        raise PackError(f"{path}: logits differ from the run's model by {diff}")
    return row
