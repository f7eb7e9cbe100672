"""DeviceLoader: batches straight from tensors that sit on the training device.

Small datasets fit in (GPU or host) memory whole, so a DataLoader's workers, collation and
host-to-device copies are pure overhead here: a batch is an index_select on resident tensors.
A data set too large for the device (Food-101 at 256 px: 15 GB of uint8) stays in host memory
instead (a memory-mapped cache file is fine: nothing copies it whole) and each batch is gathered
into a pinned buffer and copied over (``stream_to``); uint8 images are normalised per batch on
the device either way. ``suite.data.placement`` decides which.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from suite.data.augment import Augment
from suite.data.images import normalise_batch, pixel_stats


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    # SeedSequence mixes (seed, epoch, stream) so nearby pairs give unrelated generators and no
    # two pairs collide the way seed * K + epoch can.
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


class DeviceLoader:
    """Iterate (xb, yb) batches of `x`, `y`, reshuffled each epoch, optionally augmented.

    Epoch e's order comes from a generator seeded by (seed, e), and so does its augmentation
    (a generator on the data's device), so a run is reproducible and each epoch differs. Each
    iteration started (first batch taken) is the next epoch; `set_epoch` picks one explicitly,
    and state_dict / load_state_dict carry the epoch through a Lightning checkpoint (resuming at
    an epoch boundary). `augment` must keep labels.

    With ``shard=(rank, world)`` (data-parallel training) the loader still walks the whole
    dataset's batches in the same order, and yields rank's contiguous part of each: batch b of
    ``world`` ranks with batch_size B / world is batch b of one loader with batch_size B, split
    in ``world`` (the last, shorter batch as evenly as it goes). ``len`` counts those batches.
    ``batch_size`` is the global batch.

    ``pixel_norm`` (per-channel mean and std, as DataSplits.pixel_norm) says x holds uint8
    images: each batch is normalised on the device before the augmentation sees it, with the
    operations the float splits are made with, so the batches are the same values either way.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        augment: Augment | None = None,
        drop_last: bool = False,
        shard: tuple[int, int] = (0, 1),
        pixel_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}; they must match")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if drop_last and len(x) < batch_size:
            raise ValueError(
                f"drop_last with batch_size={batch_size} > {len(x)} examples yields no batch; "
                "lower batch_size or set drop_last=False"
            )
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard={shard}: the rank must be in 0 .. world - 1")
        self.x, self.y = x, y
        self.shard = (rank, world)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last
        self.epoch = 0
        self.stats = pixel_stats(*pixel_norm) if pixel_norm is not None else None
        self.target: torch.device | None = None  # streaming: where batches go; None: resident
        self.channels_last = False  # yield image batches in NHWC layout (suite.run.layout)

    @property
    def device(self) -> torch.device:
        """Where the batches are yielded."""
        return self.target or self.x.device

    @property
    def streaming(self) -> bool:
        return self.target is not None

    def to(self, device: torch.device | str) -> DeviceLoader:
        """Move the tensors to `device` once; returns self so it chains."""
        self.x = self.x.to(device)
        self.y = self.y.to(device)
        self.target = None
        self._move_stats(device)
        return self

    def _move_stats(self, device: torch.device | str) -> None:
        if self.stats is not None:
            self.stats = (self.stats[0].to(device), self.stats[1].to(device))

    def stream_to(self, device: torch.device | str) -> DeviceLoader:
        """Keep x in host memory and copy each batch of images to `device` as it is taken,
        through pinned staging buffers (so the copies run asynchronously). x itself is not
        pinned: that would copy all of it into page-locked memory, which a data set streamed
        because it is large can least afford (and a memory-mapped one would stop being mapped)."""
        device = torch.device(device)
        self.x = self.x.cpu()
        # the labels are small (8 bytes an example) and stay resident: a copy from pageable
        # memory would wait for the device's queued work every batch
        self.y = self.y.to(device)
        self.target = device
        self._move_stats(device)
        return self

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch `epoch`."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: the epoch is claimed at the first next(), so a caller that only probes
        # iter() (Lightning checks iterability that way) does not use one up.
        epoch = self.epoch
        self.epoch += 1
        yield from self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = None
        if self.shuffle:
            # randperm on a CPU generator gives the same order on every device.
            cpu_gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch, 0))
            order = torch.randperm(n, generator=cpu_gen)
            # once per epoch to where each is gathered: x (host memory when streaming) and y
            order_x = order.to(self.x.device)
            order_y = order_x if self.y.device == self.x.device else order.to(self.y.device)
        augment, aug_gen = self.augment, None
        if augment is not None:
            aug_gen = torch.Generator(device=self.device)
            aug_gen.manual_seed(_epoch_seed(self.seed, epoch, 1))
        rank, world = self.shard
        gather = _Stager(self.x, self.target, self.batch_size) if self.target is not None else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if world > 1 and augment is None:
                # only this rank's part; with an augmentation the whole batch is drawn (below)
                lo, hi = lo + (hi - lo) * rank // world, lo + (hi - lo) * (rank + 1) // world
            if order is None:
                yb = self.y[lo:hi]
                xb = gather(lo, hi, None) if gather else self.x[lo:hi]
            else:
                yb = self.y.index_select(0, order_y[lo:hi])
                xb = gather(lo, hi, order_x[lo:hi]) if gather else self.x.index_select(0, order_x[lo:hi])
            if self.stats is not None:
                xb = normalise_batch(xb, self.stats)
            if augment is not None and aug_gen is not None:
                xb = augment(xb, aug_gen)
                if world > 1:
                    # augmented whole, then split: the random draws of each example are the ones
                    # it gets in one process (an augmentation draws per batch, in batch order)
                    part = slice(len(xb) * rank // world, len(xb) * (rank + 1) // world)
                    xb, yb = xb[part], yb[part]
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb


class _Stager:
    """Host-side gather of streamed batches into two pinned buffers, each copied to the device
    asynchronously: batch b is gathered while batch b - 1's copy and step may still run, and a
    buffer is refilled only once the copy out of it has finished (its CUDA event)."""

    def __init__(self, x: torch.Tensor, target: torch.device, batch_size: int) -> None:
        self.x, self.target = x, target
        cuda = target.type == "cuda"
        shape = (min(batch_size, len(x)), *x.shape[1:])
        self.buffers = [torch.empty(shape, dtype=x.dtype, pin_memory=cuda) for _ in range(2)]
        self.events: list[Any] = [None, None]
        self.cuda = cuda
        self.turn = 0

    def __call__(self, lo: int, hi: int, idx: torch.Tensor | None) -> torch.Tensor:
        k, self.turn = self.turn, 1 - self.turn
        if self.events[k] is not None:
            self.events[k].synchronize()
        buf = self.buffers[k][: hi - lo]
        if idx is None:
            buf.copy_(self.x[lo:hi])
        else:
            torch.index_select(self.x, 0, idx, out=buf)
        # copy=True: on a CPU target .to would hand back the buffer itself, which the batch
        # after next overwrites
        out = buf.to(self.target, non_blocking=self.cuda, copy=True)
        if self.cuda:
            self.events[k] = torch.cuda.Event()
            self.events[k].record()
        return out
