"""Slot keys: how a sweep names one run of its study, and when two trials are the same run.

Kept free of heavy imports because the report reads them too (it must not need torch).
"""

from __future__ import annotations

from typing import Any


def slot_key(cell: str, repeat: int, fingerprint: str) -> str:
    """One run of the study: the cell (its grid values), which repeat, and the fingerprint of
    its whole RunConfig, so a changed ``fixed`` value makes a new slot rather than a stale hit."""
    return f"{cell}#{repeat}@{fingerprint}"


def slot_identity(slot: str, config: Any = None) -> str:
    """What makes two trials the same run: the fingerprint of their cell's RunConfig and the
    repeat, written ``<fingerprint>#<repeat>``. The readable cell part of a slot key is left out
    because it names only the fields that vary in the spec, so adding a grid with a new axis
    would otherwise rename every cell. A slot queued before slots carried fingerprints gets the
    fingerprint of the config it stored (for an untuned study, the same as its cell's)."""
    head, at, fingerprint = slot.rpartition("@")
    if not at:
        head = slot
        from suite.run.config import RunConfig  # only old studies: keeps the report off torch

        try:
            fingerprint = RunConfig.from_dict(config).fingerprint()
        except (ValueError, TypeError):
            return slot
    return f"{fingerprint}#{head.rpartition('#')[2]}"


def cell_identity(user_attrs: dict[str, Any]) -> Any:
    """The cell a trial belongs to (its fingerprint), for tuning and pruning within a cell."""
    slot = user_attrs.get("slot") or ""
    return slot.rpartition("@")[2] if "@" in slot else user_attrs.get("cell")
