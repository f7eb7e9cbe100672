import io
import json
import math
import struct
import zlib

import pytest
import torch
from torch import nn

from suite.pack.codec import group_for_count, packed_nbytes
from suite.pack.format import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE_BYTES,
    PackError,
    load_packed,
    pack_model,
    packed_to_model,
    read_packed,
    save_packed,
    unpack_bytes,
)
from suite.quant import QuantConfig, QuantConv2d, QuantEmbedding, QuantLinear, QuantMixin

LEVELS = [2, 3, 4, 5, 8, 9, 16, 17]
# gauss and lsq compute their Gaussian step numerically (~1 s per N on first use), so most
# cases here use absmax/absmean and a few exercise gauss and lsq.


# --------------------------------------------------------------------------- models


def _qc(res, rule="absmax", per_channel=False, quantize_bias=None):
    return QuantConfig(resolution=res, scale_rule=rule, per_channel=per_channel,
                       quantize_bias=quantize_bias)


class OddShapes(nn.Module):
    """Quantised tensors of 1, 7, 135 (4-D) and 1001 elements."""

    def __init__(self, spec):
        super().__init__()
        qc = _qc(spec["res"], spec.get("rule", "absmax"), spec.get("per_channel", False),
                 spec.get("quantize_bias"))
        self.one = QuantLinear(1, 1, qconfig=qc)
        self.seven = QuantLinear(7, 1, bias=False, qconfig=qc)
        self.conv = QuantConv2d(3, 5, 3, qconfig=qc)
        self.emb = QuantEmbedding(13, 77, qconfig=qc)


class TokenNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        qc = _qc(spec["res"], spec.get("rule", "absmax"), spec.get("per_channel", False),
                 spec.get("quantize_bias"))
        self.emb = QuantEmbedding(20, 16, qconfig=qc)
        self.norm = nn.LayerNorm(16)
        self.fc = QuantLinear(16, 24, qconfig=qc)
        self.head = QuantLinear(24, 5, qconfig=qc)

    def forward(self, tokens):
        h = self.norm(self.emb(tokens))
        return self.head(torch.relu(self.fc(h))).mean(dim=1)


class ConvNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        qc = _qc(spec["res"], spec.get("rule", "absmax"), spec.get("per_channel", False),
                 spec.get("quantize_bias"))
        self.c1 = QuantConv2d(3, 8, 3, padding=1, qconfig=qc)
        self.c2 = QuantConv2d(8, 8, 3, stride=2, qconfig=qc)
        self.bn = nn.BatchNorm2d(8)  # fp32 buffers, and an int64 counter stored raw
        self.fc = QuantLinear(8 * 3 * 3, 4, qconfig=qc)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.bn(self.c2(h)))
        return self.fc(h.flatten(1))


BUILDERS = {"odd": OddShapes, "token": TokenNet, "conv": ConvNet}


def build(meta):
    spec = meta["model_spec"]
    return BUILDERS[spec["kind"]](spec)


def _inputs(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "token":
        return torch.randint(0, 20, (4, 6), generator=g)
    return torch.randn(4, 3, 7, 7, generator=g)


def _trained(spec):
    """A model moved off its initialisation by a few steps (so LSQ steps and BN statistics are
    learned values, not constructor defaults)."""
    torch.manual_seed(0)
    model = build({"model_spec": spec})
    x = _inputs(spec["kind"])
    for _ in range(3):
        # Plain SGD by hand: torch.optim's first use imports torch._dynamo (seconds).
        model.zero_grad()
        model(x).square().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 0.05 * p.grad
    return model.eval()


@pytest.mark.parametrize("res", [f"N={n}" for n in LEVELS] + ["bnn"])
def test_file_round_trip_exact_indices_and_scales(tmp_path, res):
    spec = {"kind": "odd", "res": res, "per_channel": res == "N=5", "quantize_bias": True}
    torch.manual_seed(0)
    model = build({"model_spec": spec})
    meta = {"model_spec": spec, "note": "ünïcode ok"}
    path = tmp_path / "m.bswp"
    stats = save_packed(model, path, meta)
    assert stats.file_bytes == path.stat().st_size
    packed = read_packed(path)
    assert packed.meta == meta
    expected = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantMixin):
            for t, qt in module.quantized_tensors().items():
                expected[f"{name}.{t}"] = qt
    assert set(packed.qtensors) == set(expected)
    for key, qt in expected.items():
        got = packed.qtensors[key]
        assert got.shape == qt.shape and got.n == qt.n
        assert got.indices.dtype == torch.uint8
        assert torch.equal(got.indices, qt.indices.reshape(qt.shape)), key
        if qt.scale is None:
            assert got.scale is None
        else:
            assert torch.equal(got.scale, qt.scale), key
    sizes = {math.prod(q.shape) for q in expected.values()}
    assert {1, 7, 135, 1001} <= sizes
    # The fp32 shadow weights are not stored a second time.
    state, _ = load_packed(path)
    kinds = {e["name"]: e["kind"] for e in packed.entries}
    assert all(kinds[k] == "packed" for k in expected)
    assert set(state) == set(model.state_dict())
    # Same stats read back from the file as computed while writing.
    assert packed.stats() == stats


CASES = [
    ("token", "N=2", "absmean", False, None),
    ("conv", "N=3", "gauss", False, None),
    ("token", "N=5", "lsq", True, None),
    ("conv", "N=5", "lsq", True, None),
    ("conv", "N=9", "absmax", True, True),
    ("token", "N=17", "absmax", True, True),
    ("conv", "N=16", "absmean", False, None),
    ("token", "bnn", "gauss", False, None),
    ("conv", "bnn", "gauss", False, None),
]


@pytest.mark.parametrize(("kind", "res", "rule", "per_channel", "qbias"), CASES)
def test_packed_model_predicts_like_fake_quantised(tmp_path, kind, res, rule, per_channel, qbias):
    spec = {"kind": kind, "res": res, "rule": rule, "per_channel": per_channel,
            "quantize_bias": qbias}
    model = _trained(spec)
    x = _inputs(kind)
    with torch.no_grad():
        want = model(x)
    path = tmp_path / "m.bswp"
    stats = save_packed(model, path, {"model_spec": spec})
    torch.manual_seed(123)  # the builder's random init must not matter
    rebuilt = packed_to_model(path, build)
    assert not rebuilt.training
    layers = [m for m in rebuilt.modules() if isinstance(m, QuantMixin)]
    assert layers and all(m.frozen for m in layers)
    with torch.no_grad():
        got = rebuilt(x)
    # Grid values are reproduced bit for bit, so the logits are too (stronger than a tolerance;
    # torch.testing.assert_close would also cost a 2 s import of torch.distributed).
    assert torch.equal(got, want)
    n = 2 if res == "bnn" else int(res[2:])
    packed = [e for e in read_packed(path).entries if e["kind"] == "packed"]
    for e in packed:  # each tensor packed with the (g, b) that makes it smallest
        assert (e["g"], e["b"]) == group_for_count(n, math.prod(e["shape"]))
    assert stats.index_bytes == sum(
        packed_nbytes(math.prod(e["shape"]), e["g"], e["b"]) for e in packed)
    assert stats.entropy_bits_per_weight <= math.log2(n) + 1e-9
    if rule == "lsq":
        kinds = {e["name"]: e["kind"] for e in read_packed(path).entries}
        assert kinds["fc.step"] == "fp32"


def test_one_bit_mlp_file_is_30x_smaller_than_fp32(tmp_path):
    torch.manual_seed(0)
    qc = _qc("N=2", "absmean")
    model = nn.Sequential(QuantLinear(784, 1024, qconfig=qc), nn.ReLU(),
                          QuantLinear(1024, 1024, qconfig=qc), nn.ReLU(),
                          QuantLinear(1024, 10, qconfig=qc))
    stats = save_packed(model, tmp_path / "mlp.bswp", {"model_spec": {"kind": "mlp"}})
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    weights = 784 * 1024 + 1024 * 1024 + 1024 * 10
    biases = 1024 + 1024 + 10
    assert stats.params_quantized == weights
    assert stats.fp32_state_bytes == 4 * (weights + biases)
    assert stats.bits_per_weight == 1.0
    assert stats.other_bytes == 4 * biases  # biases stay fp32 and are stored once
    assert stats.packed_compression >= 30
    assert buf.getbuffer().nbytes / stats.file_bytes >= 30


def test_entropy_reported_below_log2n_for_a_sparse_ternary_tensor():
    layer = QuantLinear(100, 100, bias=False, qconfig=_qc("N=3", "absmax"))
    w = torch.zeros(100, 100)
    w[0, :10] = 1.0
    w[1, :10] = -1.0
    with torch.no_grad():
        layer.weight.copy_(w)
    stats = unpack_bytes(pack_model(layer, {})).stats()
    p0, p = 9980 / 10000, 10 / 10000
    assert stats.entropy_bits_per_weight == pytest.approx(-(p0 * math.log2(p0) + 2 * p * math.log2(p)))
    assert stats.entropy_bits_per_weight < 0.05 < math.log2(3) <= stats.bits_per_weight


def test_tied_weights_are_stored_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self, spec):
            super().__init__()
            qc = _qc(spec["res"])
            self.emb = QuantEmbedding(11, 8, qconfig=qc)
            self.out = QuantLinear(8, 11, bias=False, qconfig=qc)
            self.out.weight = self.emb.weight
            self.plain = nn.Linear(3, 3)
            self.plain2 = self.plain  # one module under two names

        def forward(self, t):
            return self.out(self.emb(t)) + self.plain2(torch.ones(3)).sum()

    spec = {"res": "N=4"}
    torch.manual_seed(0)
    model = Tied(spec).eval()
    path = tmp_path / "t.bswp"
    save_packed(model, path, {"model_spec": spec})
    entries = {e["name"]: e for e in read_packed(path).entries}
    assert entries["out.weight"] == {"name": "out.weight", "kind": "alias", "target": "emb.weight"}
    assert entries["plain2.weight"]["kind"] == "alias"
    rebuilt = packed_to_model(path, lambda meta: Tied(meta["model_spec"]))
    t = torch.arange(11).reshape(1, 11)
    with torch.no_grad():
        assert torch.equal(rebuilt(t), model(t))


def test_fp32_model_packs_without_quantised_tensors():
    model = nn.Sequential(QuantLinear(5, 3), nn.LayerNorm(3))
    packed = unpack_bytes(pack_model(model, {"a": 1}))
    stats = packed.stats()
    assert stats.params_quantized == 0 and stats.bits_per_weight == 32.0  # stored raw
    assert stats.fp32_state_bytes == 4 * (15 + 3 + 3 + 3)
    for k, v in model.state_dict().items():
        assert torch.equal(packed.state_dict()[k], v)


def test_non_fp32_tensors_keep_their_dtype():
    model = nn.Module()
    model.register_buffer("count", torch.tensor([3, -7], dtype=torch.int64))
    model.register_buffer("fp16", torch.tensor([1.5, -2.25], dtype=torch.float16))
    model.register_buffer("brain", torch.tensor([0.1, 3.0], dtype=torch.bfloat16))
    model.register_buffer("mask", torch.tensor([True, False]))
    state = unpack_bytes(pack_model(model, {})).state_dict()
    for k, v in model.state_dict().items():
        assert state[k].dtype == v.dtype and torch.equal(state[k], v), k


def test_builder_with_a_different_resolution_is_refused(tmp_path):
    spec = {"kind": "token", "res": "N=3"}
    path = tmp_path / "m.bswp"
    save_packed(build({"model_spec": spec}), path, {"model_spec": spec})
    other = {"kind": "token", "res": "N=5"}
    with pytest.raises(PackError, match=r"emb\.weight at N=5, the file has it levels N=3"):
        packed_to_model(path, lambda meta: build({"model_spec": other}))
    fp32 = {"kind": "token", "res": "fp32"}
    with pytest.raises(PackError, match="does not quantise"):
        packed_to_model(path, lambda meta: build({"model_spec": fp32}))


def test_meta_must_be_json():
    with pytest.raises(PackError, match="JSON"):
        pack_model(QuantLinear(2, 2), {"x": object()})


# --------------------------------------------------------------------------- damaged files


@pytest.fixture()
def packed_file(tmp_path):
    spec = {"kind": "token", "res": "N=5"}
    torch.manual_seed(0)
    path = tmp_path / "good.bswp"
    save_packed(build({"model_spec": spec}), path, {"model_spec": spec})
    return path


def _refused(path, data, *patterns):
    path.write_bytes(data)
    with pytest.raises(PackError) as info:
        load_packed(path)
    msg = str(info.value)
    assert str(path) in msg
    for pattern in patterns:
        assert pattern in msg, msg


def test_truncated_files_are_refused(packed_file):
    data = packed_file.read_bytes()
    header_len = struct.unpack_from("<I", data, 6)[0]
    bad = packed_file.with_name("bad.bswp")
    for cut in (0, 3, 10, PREAMBLE_BYTES + 5, PREAMBLE_BYTES + header_len + 1, len(data) - 1):
        _refused(bad, data[:cut], "truncated")


def test_flipped_payload_byte_is_refused(packed_file):
    data = bytearray(packed_file.read_bytes())
    data[-10] ^= 0x01
    _refused(packed_file, bytes(data), "payload checksum mismatch")


def test_flipped_header_byte_is_refused(packed_file):
    data = bytearray(packed_file.read_bytes())
    data[PREAMBLE_BYTES + 20] ^= 0x01
    _refused(packed_file, bytes(data), "header checksum mismatch")


def test_wrong_magic_is_refused(packed_file):
    data = packed_file.read_bytes()
    _refused(packed_file, b"PK\x03\x04" + data[4:], "bad magic")
    _refused(packed_file, b"\x80\x02", "truncated")


def test_future_version_is_refused(packed_file):
    data = bytearray(packed_file.read_bytes())
    struct.pack_into("<H", data, 4, FORMAT_VERSION + 1)
    _refused(packed_file, bytes(data), "unsupported format version 2", "newer")


def test_trailing_bytes_are_refused(packed_file):
    _refused(packed_file, packed_file.read_bytes() + b"\x00", "unexpected bytes")


def test_inconsistent_header_is_refused(packed_file):
    # A header that passes its checksum but lies about a tensor (a writer bug, or a forger) is
    # still caught before torch sees it.
    data = packed_file.read_bytes()
    header_len = struct.unpack_from("<I", data, 6)[0]
    header = json.loads(data[PREAMBLE_BYTES : PREAMBLE_BYTES + header_len])
    header["tensors"][0]["shape"] = [9999, 16]
    hb = json.dumps(header).encode()
    forged = MAGIC + struct.pack("<HII", FORMAT_VERSION, len(hb), zlib.crc32(hb)) + hb
    forged += data[PREAMBLE_BYTES + header_len :]
    _refused(packed_file, forged, "malformed header", "emb.weight")


# --------------------------------------------------------------------------- per-layer resolutions


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 32)
        self.mid = nn.Linear(32, 64)
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, idx):
        return self.head(self.norm(self.mid(self.emb(idx))))


def test_per_layer_resolutions_pack_at_their_real_bits_and_unpack_exactly(tmp_path):
    from suite.pack.format import layer_rows
    from suite.quant import quantize_

    torch.manual_seed(0)
    model = _Mixed()
    quantize_(model, "1", scale_rule="absmax", layers=["mid=2.32", "emb=4"], keep_fp32="last")
    path = tmp_path / "mixed.bsw"
    save_packed(model, path, {})
    packed = read_packed(path)
    kinds = {e["name"]: (e["kind"], e.get("n")) for e in packed.entries}
    assert kinds["emb.weight"] == ("packed", 16)
    assert kinds["mid.weight"] == ("packed", 5)
    assert kinds["head.weight"] == ("fp32", None)
    by_name = {e["name"]: e for e in packed.entries}
    for name, n in (("emb.weight", 16), ("mid.weight", 5)):
        numel = math.prod(by_name[name]["shape"])
        bits = 8 * by_name[name]["length"] / numel
        assert math.log2(n) <= bits <= 1.01 * math.log2(n) + 8 / numel
    rows = {r["name"]: r for r in layer_rows(model, packed.entries)}
    assert [rows[k]["resolution"] for k in ("emb", "mid", "norm", "head")] == \
        ["4", "2.32", "fp32", "fp32"]
    assert rows["head"]["type"] == "QuantLinear" and rows["norm"]["type"] == "LayerNorm"
    assert rows["head"]["params"] == 650 and rows["head"]["bytes"] == 4 * 650
    assert rows["emb"]["bytes"] == by_name["emb.weight"]["length"] + 4  # indices + one step
    assert sum(r["bytes"] for r in rows.values()) == packed.header["payload_bytes"]
    # every tensor comes back as the forward pass used it
    state = packed.state_dict()
    for name in ("emb", "mid"):
        assert torch.equal(state[f"{name}.weight"], getattr(model, name).quantized_weight())
    assert torch.equal(state["head.weight"], model.head.weight.detach())

    def build(meta):
        fresh = _Mixed()
        quantize_(fresh, "1", scale_rule="absmax", layers=["mid=2.32", "emb=4"], keep_fp32="last")
        return fresh

    rebuilt = packed_to_model(packed, build)
    idx = torch.randint(0, 40, (3, 5))
    with torch.no_grad():
        assert torch.equal(rebuilt(idx), model.eval()(idx))
