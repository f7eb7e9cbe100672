"""Weights as safetensors files, with the permissions every other file the suite writes has."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, then the mode a plain open() would have given (0666 less the
    umask): save_file creates its files 0600, so a run shared with a group or copied to a
    results server was unreadable by anyone but its writer."""
    from safetensors.torch import save_file

    save_file(_unshared(tensors), str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    Path(path).chmod(0o666 & ~umask)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory, as tied weights do (a Hugging Face GPT-2's
    LM head and token embedding): each tensor whose storage an earlier one uses is stored as its
    own copy. Loading the file back into the model ties them again (both keys are copied into
    the one parameter)."""
    seen: set[int] = set()
    out = {}
    for key, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        out[key] = t.clone() if ptr and ptr in seen else t
        seen.add(ptr)
    return out
