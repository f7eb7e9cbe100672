"""Memory layout of a run's convolutions: channels_last only where it was measured to win.

channels_last (NHWC) lets the convolution kernels read each pixel's channels contiguously. It
changes which kernels run, so a run's numbers move by float rounding (as a different thread
count does), never what is trained: the fingerprint leaves it out and the result records it.
Measured end to end (bench/bench_layout.py, BENCHMARKS.md) on CPU, the small CNN's fit: 3 x 32 x 32
images 0.73x of the default layout's time (0.69-0.74 over pairs); 1 x 28 x 28 no consistent
gain (medians 0.80 and 1.00 in two runs, pairs 0.71-1.41); 1 x 8 x 8 1.00-1.04x. So ``auto``
takes it for the CNN family on colour images on CPU, and nowhere else until a measurement says
so (on a GPU, bench/gpu_check.sh measures it).
"""

from __future__ import annotations

import torch
from torch import nn

from suite.run.config import MEMORY_FORMATS  # noqa: F401 - RunConfig.memory_format's choices


def use_channels_last(requested: str, model: nn.Module, input_shape: tuple[int, ...],
                      device: torch.device) -> bool:
    """Whether a run of ``model`` on inputs of ``input_shape`` on ``device`` takes channels_last."""
    if requested != "auto":
        return requested == "channels_last"
    from suite.models.cnn import CNN

    colour = len(input_shape) == 3 and input_shape[0] >= 3
    return isinstance(model, CNN) and colour and device.type == "cpu"
