"""Memory accounting: how many parameters a model stores at which precision (like larq's summary)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from torch import nn

from suite.quant.layers import QuantMixin


@dataclass(frozen=True)
class ParamSummary:
    params: int                 # trainable parameters (grid steps of non-learned rules excluded)
    params_quantized: int       # parameters stored below 32 bits
    params_fp32: int
    by_bits: dict[float, int] = field(default_factory=dict)  # stored bits -> count (scales included)
    fp32_bytes: float = 0.0     # every parameter at 32 bits
    quantized_bytes: float = 0.0  # quantised parameters at log2(N) bits, the rest (and scales) at 32

    @property
    def weight_bits(self) -> float:
        """Average stored bits per parameter."""
        return 8.0 * self.quantized_bytes / self.params if self.params else 0.0

    @property
    def compression(self) -> float:
        return self.fp32_bytes / self.quantized_bytes if self.quantized_bytes else 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "params": self.params,
            "params_quantized": self.params_quantized,
            "params_fp32": self.params_fp32,
            "weight_bits": self.weight_bits,
            "fp32_bytes": self.fp32_bytes,
            "quantized_bytes": self.quantized_bytes,
            "compression": self.compression,
        }

    def describe(self) -> str:
        parts = [f"{n:,} at {b:.3g} bits" for b, n in sorted(self.by_bits.items())]
        return f"{self.params:,} parameters: " + ", ".join(parts)


def param_summary(model: nn.Module) -> ParamSummary:
    """Count every parameter once: quantised layers report theirs; anything else (a LayerNorm gain,
    a class token, a learned step) is fp32 and said so."""
    by_bits: dict[float, int] = defaultdict(int)
    owned: set[int] = set()
    quantized = 0
    bits_total = 0.0
    for module in model.modules():
        if not isinstance(module, QuantMixin):
            continue
        for p in (module.weight, module.bias):
            if p is not None:
                owned.add(id(p))
        if module.step is not None:
            owned.add(id(module.step))
        for count in module.precision_counts():
            by_bits[count.bits] += count.numel
            bits_total += count.numel * count.bits
            if count.bits < 32 and count.name != "scale":
                quantized += count.numel
    params = 0
    for p in model.parameters():
        params += p.numel()
        if id(p) not in owned:
            by_bits[32.0] += p.numel()
            bits_total += 32.0 * p.numel()
    return ParamSummary(
        params=params,
        params_quantized=quantized,
        params_fp32=params - quantized,
        by_bits=dict(by_bits),
        fp32_bytes=4.0 * params,
        quantized_bytes=bits_total / 8.0,
    )
