"""Where a run's data sits while it trains: resident on the device, or streamed from host memory.

Resident is the fast path (a batch is an index_select where the model is), so it is taken
whenever the data leaves the device room to train: at most ``DEVICE_SHARE`` of its free memory.
A larger data set (Food-101 at paper 1's 256 px is 15 GB of uint8 training images) stays in
host memory and each batch is gathered there into a pinned buffer and copied over
asynchronously (DeviceLoader.stream_to). On a CPU or an Apple GPU the data is in host memory
either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from suite.data.names import PLACEMENTS  # RunConfig.data_placement's choices, without torch

# The share of the device's free memory the data may take and still stay resident: the rest is
# for the weights, optimiser state, activations and the allocator's slack.
DEVICE_SHARE = 0.5


@dataclass(frozen=True)
class Placement:
    mode: str  # "device" (resident on the training device) or "stream" (host memory, copied per batch)
    device: str
    data_bytes: int
    free_bytes: int | None  # the device's free memory when it was decided; None: not a GPU
    requested: str = "auto"

    def model_room(self, free: int | None) -> int | None:
        """What of the device's ``free`` bytes the model may take: on a GPU, less the data it
        keeps resident (host memory already holds the data when ``free`` is measured)."""
        if free is None or self.mode != "device" or self.free_bytes is None:
            return free
        return max(0, free - self.data_bytes)

    def describe(self) -> str:
        """One line for the run's log: what was decided and why."""
        size = f"{self.data_bytes / 2**30:.2f} GiB"
        why = "" if self.requested == "auto" else f" (data_placement={self.requested})"
        if self.mode == "stream":
            room = (f" does not fit in {DEVICE_SHARE:.0%} of the {self.free_bytes / 2**30:.1f} GiB "
                    f"free on {self.device}" if self.free_bytes is not None and not why else "")
            return (f"data: {size}{room}; streamed from host memory, each batch copied to "
                    f"{self.device}{why}")
        return f"data: {size} resident on {self.device}{why}"


def choose_placement(requested: str, data_bytes: int, device: torch.device,
                     free_bytes: int | None) -> Placement:
    """The placement of ``data_bytes`` of data for a run on ``device`` with ``free_bytes`` of free
    device memory (None: unknown, or host memory)."""
    if requested not in PLACEMENTS:
        raise ValueError(f"data_placement={requested!r}: choose one of {', '.join(PLACEMENTS)}")
    mode = requested
    if requested == "auto":
        fits = device.type != "cuda" or free_bytes is None or data_bytes <= DEVICE_SHARE * free_bytes
        mode = "device" if fits else "stream"
    return Placement(mode, str(device), data_bytes,
                     free_bytes if device.type == "cuda" else None, requested)
