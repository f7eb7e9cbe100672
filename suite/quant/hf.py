"""Hugging Face's ``Conv1D`` (GPT-2's attention and MLP projections) as a quantised layer.

``transformers.pytorch_utils.Conv1D`` is a linear layer with its weight stored transposed,
shape (in, out), and ``y = x @ W + b``. ``QuantHFConv1D`` keeps that layout (so the model's
state_dict, its checkpoints and Hugging Face's weight tying still fit) and quantises the weight
with its output axis (1) as the channel axis of a per-channel step.

Imported by ``quantize_`` only when a model holds a ``Conv1D`` (it imports transformers).
"""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D

from suite.quant.layers import QuantMixin
from suite.quant.quantize import swap_class


class QuantHFConv1D(QuantMixin, Conv1D):
    out_axis = 1  # weight (in, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        b = self.quantized_bias()
        y = torch.addmm(b, x.view(-1, x.size(-1)), self.quantized_weight())
        return self._normalize(y.view(size_out), (-1,))

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}, resolution={self.qconfig.resolution}"

    def __repr__(self) -> str:  # Conv1D's own __repr__ would hide the resolution
        return f"QuantHFConv1D({self.extra_repr()})"


convert_conv1d = swap_class(QuantHFConv1D)
