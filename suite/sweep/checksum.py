"""A checksum of what a trial stores as its outcome, so a record changed after it was written
(a flipped digit of a test_acc, a result that landed on another trial) is reported as damage
instead of being used.

It covers the trial's slot and cell (from its queue record) with its RunConfig and RunResult
(written when it finished): a result moved onto another trial's slot fails it as surely as an
edited number. Written by the sweep's trial execution and the W&B agent path; checked by the
report and by ``bitsweep repair-journal``. Kept free of heavy imports: the report reads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

CHECKSUM_ATTR = "checksum"


def record_checksum(*, slot: Any, cell: Any, config: Any, result: Any) -> str:
    """sha256 of the canonical JSON of a trial's slot, cell, config and result. Canonical as
    the storage gives it back: JSON has no tuples, and Python writes floats exactly."""
    text = json.dumps({"cell": cell, "config": config, "result": result, "slot": slot},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def stored_checksum(user_attrs: Mapping[str, Any]) -> str:
    """The checksum of a trial's user attributes as they are stored now."""
    return record_checksum(slot=user_attrs.get("slot"), cell=user_attrs.get("cell"),
                           config=user_attrs.get("config"), result=user_attrs.get("result"))


def verify(user_attrs: Mapping[str, Any]) -> bool | None:
    """Whether a trial's stored outcome is the one written with its checksum; None when it
    carries no checksum (written before checksums were, or not finished): not verified."""
    written = user_attrs.get(CHECKSUM_ATTR)
    if written is None:
        return None
    return written == stored_checksum(user_attrs)


def damage_lines(trials: Iterable[Any], storage: str) -> list[str]:
    """A sentence per trial whose stored outcome fails its checksum (one that repair-journal has
    failed as damaged aside), with what to do about it on ``storage``."""
    from suite.sweep.storage import REPAIR_COMMAND, is_url

    fix = "its cell runs again at the next `bitsweep sweep` and the report leaves it out"
    if not is_url(storage):
        fix += f"; `{REPAIR_COMMAND} {storage}` fails it in the journal"
    return [f"trial {t.number} (cell {t.user_attrs.get('cell')}): its stored config and result "
            f"do not match their checksum (changed after they were written); {fix}"
            for t in trials
            if t.user_attrs.get("failure") != "damaged" and verify(t.user_attrs) is False]
