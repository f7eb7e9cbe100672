"""Packed model files: quantised weights stored at close to log2(N) bits each.

A fake-quantised model saved with ``torch.save`` keeps its fp32 shadow weights, so a "1-bit"
model file is as large as the fp32 one. This module stores each quantised tensor as its level
indices packed near log2(N) bits per weight plus its fp32 grid step(s), keeps every other tensor
as it is, and rebuilds an inference model whose quantised layers are ``frozen`` (they use the
stored grid values as they are).

Each quantised tensor's indices are packed by :mod:`suite.pack.codec`.

File layout (version 1, all integers little-endian)
---------------------------------------------------
======  =======  =============================================================
offset  size     field
======  =======  =============================================================
0       4        magic ``b"BSWP"``
4       2        format version (u16), currently 1
6       4        header length H in bytes (u32)
10      4        CRC32 (``zlib.crc32``) of the header bytes (u32)
14      H        header: UTF-8 JSON object (below)
14+H    P        payload: the tensors' bytes, back to back, no alignment
======  =======  =============================================================

The header JSON object holds ``format`` (``"bitsweep-packed"``), ``payload_bytes`` (P),
``payload_crc32`` (CRC32 of the payload), ``meta`` (the caller's JSON-serialisable dict, e.g.
``{"model_spec": ...}``) and ``tensors``, a list in state_dict order of entries with ``name``
(the state_dict key), ``kind`` and:

``packed``  a quantised tensor: ``shape``, ``dtype`` (``"float32"``, of the dequantised
            values), ``grid`` (``"levels"`` or ``"bnn"``), ``n``, ``g``,
            ``b``, ``offset`` and ``length`` (bytes of the index stream within the payload),
            ``index_dtype`` (``"uint8"``, or ``"int32"`` for N > 256) and ``scale``: null for bnn,
            else ``{"shape", "offset", "length"}`` of the fp32 grid step(s), which broadcast
            against ``shape`` (one scalar, or one per output channel). Value of index ``i``:
            ``(i - (n-1)/2) * scale`` for ``levels``; ``i`` itself for ``bnn``.
``fp32``    a float32 tensor: ``shape``, ``dtype``, ``offset``, ``length``; raw little-endian.
``raw``     any other dtype (an int64 counter, a float16 buffer): as ``fp32``, ``dtype`` names it.
``alias``   a tensor that is the same object as another entry (tied weights): ``target``.

Each quantised tensor is packed at its own N, so a model whose layers have different resolutions
is stored at each layer's real size. The per-layer table (``layer_rows``: name, type, params,
resolution, bits, bytes) is read off these entries and the model; the header holds no copy of
it (the facts are all in the entries already, and a 1-bit model's file stays 30x smaller than
its fp32 one).

Reading uses only ``json`` and ``numpy.frombuffer``; nothing is unpickled. A file that is
truncated, has trailing bytes, a bad magic, an unknown version, a checksum mismatch or an
inconsistent header is refused with :class:`PackError`, naming the file and the problem.
"""


from __future__ import annotations

import json
import math
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from suite.pack.codec import (
    MAX_WORD_BITS,
    entropy_bits,
    group_for_count,
    pack_indices,
    packed_nbytes,
    unpack_indices,
)
from suite.quant.layers import QTensor, QuantMixin
from suite.quant.resolution import Resolution

MAGIC = b"BSWP"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<HII")  # version, header length, header CRC32 (after the magic)
PREAMBLE_BYTES = len(MAGIC) + _PREAMBLE.size

_NP_DTYPES: dict[torch.dtype, str] = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",  # numpy has no bfloat16: stored as its raw 16-bit patterns
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.uint8: "uint8",
    torch.bool: "bool",
}
_TORCH_DTYPES = {name: dt for dt, name in _NP_DTYPES.items()}


class PackError(ValueError):
    """A packed file (or a model to pack) that cannot be used; the message says which and why."""


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class PackStats:
    """What packing saved. ``bits_per_weight`` counts only the index streams (the scales are in
    ``scale_bytes``), so it compares directly with log2 N and with the entropy; a model with nothing
    quantised stores every weight raw, at 32 bits. The names differ from the memory accounting's
    (result.json's ``fp32_bytes`` and ``compression`` count parameters only, at their grid's bits):
    one name, one definition."""

    file_bytes: int
    fp32_state_bytes: int       # the same state_dict at 4 bytes per float param/buffer
    params_quantized: int       # elements of the packed tensors
    bits_per_weight: float      # index-stream bits / params_quantized (32.0: nothing quantised)
    entropy_bits_per_weight: float  # empirical index entropy, count-weighted over tensors
    packed_compression: float   # fp32_state_bytes / file_bytes
    index_bytes: int = 0        # packed index streams
    scale_bytes: int = 0        # fp32 grid steps of the packed tensors
    other_bytes: int = 0        # tensors kept as they are (fp32 biases, norms, LSQ steps, ...)
    header_bytes: int = 0       # magic, version, lengths, JSON header
    levels: dict[str, int] = field(default_factory=dict)  # N (as text, "bnn") -> packed elements

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _stats(entries: list[dict[str, Any]], qtensors: dict[str, QTensor],
           file_bytes: int, header_bytes: int) -> PackStats:
    fp32_elems = 0
    index_bytes = scale_bytes = other_bytes = 0
    params_q = 0
    entropy_sum = 0.0
    levels: dict[str, int] = {}
    for e in entries:
        kind = e["kind"]
        if kind == "alias":
            continue
        numel = math.prod(e["shape"])
        if kind == "packed":
            fp32_elems += numel
            params_q += numel
            index_bytes += e["length"]
            if e["scale"] is not None:
                scale_bytes += e["scale"]["length"]
            entropy_sum += numel * entropy_bits(qtensors[e["name"]].indices, e["n"])
            key = "bnn" if e["grid"] == "bnn" else str(e["n"])
            levels[key] = levels.get(key, 0) + numel
        else:
            other_bytes += e["length"]
            if _TORCH_DTYPES[e["dtype"]].is_floating_point:
                fp32_elems += numel
    fp32_bytes = 4 * fp32_elems
    return PackStats(
        file_bytes=file_bytes,
        fp32_state_bytes=fp32_bytes,
        params_quantized=params_q,
        bits_per_weight=8.0 * index_bytes / params_q if params_q else 32.0,
        entropy_bits_per_weight=entropy_sum / params_q if params_q else 0.0,
        packed_compression=fp32_bytes / file_bytes if file_bytes else 0.0,
        index_bytes=index_bytes,
        scale_bytes=scale_bytes,
        other_bytes=other_bytes,
        header_bytes=header_bytes,
        levels=levels,
    )


def _entry_resolution(e: dict[str, Any]) -> str:
    if e["kind"] != "packed":
        return "fp32"
    return "bnn" if e["grid"] == "bnn" else Resolution("levels", e["n"]).label


def layer_rows(model: nn.Module, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The packed file's per-layer table, in module order: one row per module with tensors in
    the file. ``params``: its parameters (a learned grid step is a scale, not counted);
    ``resolution``: what its weight is stored at (``fp32`` for a module nothing quantises);
    ``bytes``: payload bytes of all its tensors (index streams, grid steps, kept tensors and
    buffers; a tied alias costs none); ``bits``: payload bits of its parameters and their steps
    per parameter."""
    modules = dict(model.named_modules())
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    by_name = {e["name"]: e for e in entries}
    rows: dict[str, dict[str, Any]] = {}
    param_bytes: dict[str, int] = {}
    for e in entries:
        mod_name, _, leaf = e["name"].rpartition(".")
        module = modules.get(mod_name)
        if module is None:
            continue
        if mod_name not in rows:
            weight = by_name.get(f"{mod_name}.weight" if mod_name else "weight")
            if weight is not None and weight["kind"] == "alias":
                weight = by_name[weight["target"]]
            rows[mod_name] = {"name": mod_name, "type": type(module).__name__, "params": 0,
                              "resolution": _entry_resolution(weight) if weight else "fp32",
                              "bits": 0.0, "bytes": 0}
            param_bytes[mod_name] = 0
        if e["kind"] == "alias":
            continue
        size = e["length"] + (e["scale"]["length"] if e.get("scale") else 0)
        rows[mod_name]["bytes"] += size
        if e["name"] in params:
            param_bytes[mod_name] += size
            if not (leaf == "step" and isinstance(module, QuantMixin)):
                rows[mod_name]["params"] += math.prod(e["shape"])
    for name, row in rows.items():
        row["bits"] = 8.0 * param_bytes[name] / row["params"] if row["params"] else 0.0
    return list(rows.values())


# --------------------------------------------------------------------------- writing


def _tensor_bytes(t: torch.Tensor) -> tuple[str, bytes]:
    t = t.detach().cpu().contiguous()
    name = _NP_DTYPES.get(t.dtype)
    if name is None:
        raise PackError(f"cannot store a tensor of dtype {t.dtype}")
    if t.dtype == torch.bfloat16:
        arr = t.view(torch.int16).numpy()
    else:
        arr = t.numpy()
    return name, arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _quantized_entries(model: nn.Module) -> dict[str, tuple[QTensor, nn.Parameter]]:
    """state_dict key -> (QTensor, the shadow parameter it replaces), for every QuantMixin layer."""
    out: dict[str, tuple[QTensor, nn.Parameter]] = {}
    for mod_name, module in model.named_modules():
        if not isinstance(module, QuantMixin):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        for name, qt in module.quantized_tensors().items():
            out[prefix + name] = (qt, getattr(module, name))
    return out


def _same_qtensor(a: QTensor, b: QTensor) -> bool:
    if a.n != b.n or a.shape != b.shape or not torch.equal(a.indices, b.indices):
        return False
    if a.scale is None or b.scale is None:
        return a.scale is None and b.scale is None
    return torch.equal(a.scale, b.scale)


def _pack(model: nn.Module, meta: dict[str, Any]) -> tuple[bytes, PackStats]:
    if not isinstance(meta, dict):
        raise PackError(f"meta must be a dict, got {type(meta).__name__}")
    quant = _quantized_entries(model)
    state = model.state_dict(keep_vars=True)
    missing = [k for k in quant if k not in state]
    if missing:
        raise PackError(f"quantised tensors not in the model's state_dict: {missing}")
    # Tensor identity -> first key storing it, so tied tensors are stored once.
    owner: dict[int, str] = {}
    entries: list[dict[str, Any]] = []
    qtensors: dict[str, QTensor] = {}
    chunks: list[bytes] = []
    offset = 0

    def put(data: bytes) -> tuple[int, int]:
        nonlocal offset
        chunks.append(data)
        start, offset = offset, offset + len(data)
        return start, len(data)

    for key, tensor in state.items():
        tid = id(tensor)
        if tid in owner:
            target = owner[tid]
            if key in quant and target in quant:
                if not _same_qtensor(quant[key][0], quant[target][0]):
                    raise PackError(f"{key} and {target} are one tensor quantised two ways")
            elif key in quant or target in quant:
                # One user sees grid values, the other the shadow floats: a packed file can only
                # give both the grid values, and that would change the model.
                raise PackError(f"{key} is tied to {target} but only one of them is quantised")
            entries.append({"name": key, "kind": "alias", "target": target})
            continue
        owner[tid] = key
        if key in quant:
            qt = quant[key][0]
            grid = "bnn" if qt.scale is None else "levels"
            g, b = group_for_count(qt.n, qt.indices.numel())
            off, length = put(pack_indices(qt.indices, qt.n, g, b))
            entry: dict[str, Any] = {
                "name": key, "kind": "packed", "shape": list(qt.shape), "dtype": "float32",
                "grid": grid, "n": qt.n,
                "g": g, "b": b, "offset": off, "length": length,
                "index_dtype": "uint8" if qt.n <= 256 else "int32", "scale": None,
            }
            if qt.scale is not None:
                s = qt.scale.detach().cpu().to(torch.float32).contiguous()
                soff, slen = put(s.numpy().astype("<f4", copy=False).tobytes())
                entry["scale"] = {"shape": list(s.shape), "offset": soff, "length": slen}
            entries.append(entry)
            qtensors[key] = qt
            continue
        dtype, data = _tensor_bytes(tensor)
        off, length = put(data)
        entries.append({
            "name": key, "kind": "fp32" if dtype == "float32" else "raw", "shape":
            list(tensor.shape), "dtype": dtype, "offset": off, "length": length,
        })
    payload = b"".join(chunks)
    header = {
        "format": "bitsweep-packed",
        "payload_bytes": len(payload),
        "payload_crc32": zlib.crc32(payload),
        "tensors": entries,
        "meta": meta,
    }
    try:
        header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PackError(f"meta is not JSON-serialisable: {exc}") from exc
    preamble = MAGIC + _PREAMBLE.pack(FORMAT_VERSION, len(header_bytes), zlib.crc32(header_bytes))
    data = preamble + header_bytes + payload
    stats = _stats(entries, qtensors, len(data), len(preamble) + len(header_bytes))
    return data, stats


def pack_model(model: nn.Module, meta: dict[str, Any]) -> bytes:
    """The packed file's bytes for ``model``; ``meta`` (JSON-serialisable) rides in the header."""
    return _pack(model, meta)[0]


def save_packed(model: nn.Module, path: str | os.PathLike[str],
                meta: dict[str, Any]) -> PackStats:
    """Write the packed file (atomically: a temporary file renamed into place) and say what it
    saved."""
    data, stats = _pack(model, meta)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return stats


# --------------------------------------------------------------------------- reading


@dataclass
class PackedModel:
    """A decoded packed file: quantised tensors as QTensors, the rest as tensors."""

    source: str
    header: dict[str, Any]
    qtensors: dict[str, QTensor]
    tensors: dict[str, torch.Tensor]
    file_bytes: int

    @property
    def meta(self) -> dict[str, Any]:
        return self.header["meta"]

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.header["tensors"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor by its state_dict key; quantised ones dequantised to their grid values."""
        out: dict[str, torch.Tensor] = {}
        for e in self.entries:
            if e["kind"] == "packed":
                out[e["name"]] = self.qtensors[e["name"]].values().contiguous()
            elif e["kind"] != "alias":
                out[e["name"]] = self.tensors[e["name"]]
        for e in self.entries:
            if e["kind"] == "alias":
                out[e["name"]] = out[e["target"]]
        return {e["name"]: out[e["name"]] for e in self.entries}

    def stats(self) -> PackStats:
        header_bytes = self.file_bytes - self.header["payload_bytes"]
        return _stats(self.entries, self.qtensors, self.file_bytes, header_bytes)


def _fail(source: str, what: str) -> PackError:
    return PackError(f"{source}: not a usable bitsweep packed file: {what}")


def _check_shape(source: str, name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _fail(source, f"malformed header: tensor {name!r} has shape {shape!r}")
    return tuple(shape)


def _segment(source: str, name: str, spec: dict[str, Any], payload: bytes,
             expect: int) -> bytes:
    off, length = spec.get("offset"), spec.get("length")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (off, length)):
        raise _fail(source, f"malformed header: tensor {name!r} has offset/length {off!r}/{length!r}")
    if length != expect:
        raise _fail(source, f"malformed header: tensor {name!r} has {length} bytes, its shape "
                            f"needs {expect}")
    if off + length > len(payload):
        raise _fail(source, f"malformed header: tensor {name!r} ends at byte {off + length} of a "
                            f"{len(payload)}-byte payload")
    return payload[off : off + length]


def _decode_entry(source: str, e: dict[str, Any], payload: bytes,
                  qtensors: dict[str, QTensor], tensors: dict[str, torch.Tensor]) -> None:
    name = e["name"]
    kind = e["kind"]
    if kind == "alias":
        return
    shape = _check_shape(source, name, e.get("shape"))
    numel = math.prod(shape)
    if kind == "packed":
        n, g, b, grid = e.get("n"), e.get("g"), e.get("b"), e.get("grid")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (n, g, b)) or not (
            n >= 2 and g >= 1 and 1 <= b <= MAX_WORD_BITS and n**g <= 2**b
        ):
            raise _fail(source, f"malformed header: tensor {name!r} has n={n!r} g={g!r} b={b!r}")
        if grid not in ("levels", "bnn") or (grid == "bnn") != (e.get("scale") is None) or (
            grid == "bnn" and n != 2
        ):
            raise _fail(source, f"malformed header: tensor {name!r} has grid {grid!r} with "
                                f"n={n} and scale {e.get('scale')!r}")
        raw = _segment(source, name, e, payload, packed_nbytes(numel, g, b))
        try:
            idx = unpack_indices(raw, n, numel, g, b)
        except ValueError as exc:
            raise _fail(source, f"tensor {name!r}: {exc}") from exc
        scale = None
        if grid == "levels":
            spec = e["scale"]
            if not isinstance(spec, dict):
                raise _fail(source, f"malformed header: tensor {name!r} has scale {spec!r}")
            sshape = _check_shape(source, name, spec.get("shape"))
            # The step broadcasts against the tensor (scalar or per output channel).
            if len(sshape) > len(shape) or any(
                s not in (1, d) for s, d in zip(reversed(sshape), reversed(shape))
            ):
                raise _fail(source, f"malformed header: tensor {name!r} of shape {list(shape)} "
                                    f"has a scale of shape {list(sshape)}")
            sraw = _segment(source, name + " scale", spec, payload, 4 * math.prod(sshape))
            scale = torch.from_numpy(np.frombuffer(sraw, "<f4").astype(np.float32)).reshape(sshape)
        qtensors[name] = QTensor(torch.from_numpy(idx.copy()).reshape(shape), scale, n, shape)
        return
    if kind in ("fp32", "raw"):
        dtype = e.get("dtype")
        if dtype not in _TORCH_DTYPES or (kind == "fp32") != (dtype == "float32"):
            raise _fail(source, f"malformed header: tensor {name!r} has kind {kind} and dtype "
                                f"{dtype!r}")
        np_dtype = np.dtype("<i2") if dtype == "bfloat16" else np.dtype(dtype).newbyteorder("<")
        raw = _segment(source, name, e, payload, numel * np_dtype.itemsize)
        arr = np.frombuffer(raw, np_dtype).astype(np_dtype.newbyteorder("="))
        t = torch.from_numpy(arr).reshape(shape)
        tensors[name] = t.view(torch.bfloat16) if dtype == "bfloat16" else t
        return
    raise _fail(source, f"malformed header: tensor {name!r} has unknown kind {kind!r}")


def unpack_bytes(data: bytes, source: str = "<bytes>") -> PackedModel:
    """Decode a packed file held in memory; ``source`` names it in error messages."""
    size = len(data)
    if size < PREAMBLE_BYTES:
        if size >= len(MAGIC) and data[: len(MAGIC)] != MAGIC:
            raise _fail(source, f"bad magic {data[:4]!r} (expected {MAGIC!r})")
        raise _fail(source, f"truncated: {size} bytes, the fixed preamble alone is "
                            f"{PREAMBLE_BYTES}")
    if data[: len(MAGIC)] != MAGIC:
        raise _fail(source, f"bad magic {data[:4]!r} (expected {MAGIC!r})")
    version, header_len, header_crc = _PREAMBLE.unpack_from(data, len(MAGIC))
    if version != FORMAT_VERSION:
        newer = " (written by a newer bitsweep)" if version > FORMAT_VERSION else ""
        raise _fail(source, f"unsupported format version {version}{newer}; this reader "
                            f"understands version {FORMAT_VERSION}")
    if PREAMBLE_BYTES + header_len > size:
        raise _fail(source, f"truncated: the header needs {header_len} bytes after the preamble, "
                            f"the file has {size - PREAMBLE_BYTES}")
    header_bytes = data[PREAMBLE_BYTES : PREAMBLE_BYTES + header_len]
    if zlib.crc32(header_bytes) != header_crc:
        raise _fail(source, "header checksum mismatch (the file is corrupted)")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(source, f"header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list) or not all(
        isinstance(header.get(k), int) for k in ("payload_bytes", "payload_crc32")
    ) or not isinstance(header.get("meta"), dict):
        raise _fail(source, "malformed header: needs tensors, payload_bytes, payload_crc32, meta")
    payload = data[PREAMBLE_BYTES + header_len :]
    expected = header["payload_bytes"]
    if len(payload) < expected:
        raise _fail(source, f"truncated: payload has {len(payload)} of {expected} bytes")
    if len(payload) > expected:
        raise _fail(source, f"{len(payload) - expected} unexpected bytes after the payload")
    if zlib.crc32(payload) != header["payload_crc32"]:
        raise _fail(source, "payload checksum mismatch (the file is corrupted)")

    qtensors: dict[str, QTensor] = {}
    tensors: dict[str, torch.Tensor] = {}
    names: set[str] = set()
    for e in header["tensors"]:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or e["name"] in names:
            raise _fail(source, f"malformed header: bad or repeated tensor entry {e!r:.200}")
        names.add(e["name"])
        _decode_entry(source, e, payload, qtensors, tensors)
    for e in header["tensors"]:
        if e["kind"] == "alias" and (e.get("target") not in names or e["target"] == e["name"]):
            raise _fail(source, f"malformed header: alias {e['name']!r} targets "
                                f"{e.get('target')!r}")
    stored = {e["name"]: e for e in header["tensors"]}
    for e in header["tensors"]:
        if e["kind"] == "alias" and stored[e["target"]]["kind"] == "alias":
            raise _fail(source, f"malformed header: alias {e['name']!r} targets another alias")
    return PackedModel(source, header, qtensors, tensors, size)


def read_packed(path: str | os.PathLike[str]) -> PackedModel:
    """Decode a packed file, keeping the quantised tensors as QTensors (indices + scales)."""
    path = Path(path)
    return unpack_bytes(path.read_bytes(), str(path))


def load_packed(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)``: the state_dict holds the dequantised (grid) values of the quantised
    tensors and every other tensor as stored; it loads into the model it came from."""
    packed = read_packed(path)
    return packed.state_dict(), packed.meta


def _quant_keys(model: nn.Module) -> dict[str, tuple[str, int]]:
    """state_dict key -> (grid, N) of every tensor the built model quantises."""
    out: dict[str, tuple[str, int]] = {}
    for mod_name, module in model.named_modules():
        if not isinstance(module, QuantMixin):
            continue
        res = module.qconfig.resolution
        if not res.quantized:
            continue
        prefix = f"{mod_name}." if mod_name else ""
        grid = "bnn" if res.kind == "bnn" else "levels"
        out[prefix + "weight"] = (grid, res.levels)
        if module.bias is not None and module.qconfig.bias_quantized:
            out[prefix + "bias"] = (grid, res.levels)
    return out


def packed_to_model(path: str | os.PathLike[str] | PackedModel,
                    build: Callable[[dict[str, Any]], nn.Module]) -> nn.Module:
    """An inference model from a packed file (or one already read with :func:`read_packed`):
    ``build(meta)`` makes the architecture, the grid values are loaded and every QuantMixin layer
    is frozen (uses them as they are). The model is returned in eval mode.

    Refuses (PackError) a built model that quantises different tensors, or at a different N,
    than the file holds: a frozen layer would silently run on the wrong values.
    """
    packed = path if isinstance(path, PackedModel) else read_packed(path)
    path = packed.source
    model = build(packed.meta)
    stored = {e["name"]: e for e in packed.entries}

    def resolved(key: str) -> dict[str, Any] | None:
        e = stored.get(key)
        return stored.get(e["target"]) if e is not None and e["kind"] == "alias" else e

    expected = _quant_keys(model)
    for key, (grid, n) in expected.items():
        e = resolved(key)
        if e is None or e["kind"] != "packed" or e["grid"] != grid or e["n"] != n:
            found = "absent" if e is None else (
                f"{e['grid']} N={e['n']}" if e["kind"] == "packed" else f"stored as {e['kind']}")
            want = "bnn" if grid == "bnn" else f"N={n}"
            raise PackError(f"{path}: the model built from meta quantises {key} at {want}, "
                            f"the file has it {found}")
    extra = [k for k, e in stored.items() if e["kind"] == "packed" and k not in expected]
    if extra:
        raise PackError(f"{path}: the file holds quantised tensors the model built from meta does "
                        f"not quantise: {extra}")
    try:
        model.load_state_dict(packed.state_dict(), strict=True)
    except RuntimeError as exc:
        raise PackError(f"{path}: does not fit the model built from meta: {exc}") from exc
    for module in model.modules():
        if isinstance(module, QuantMixin):
            module.frozen = True
    return model.eval()
