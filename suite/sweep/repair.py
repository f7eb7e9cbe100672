"""`bitsweep repair-journal`: a damaged journal file rewritten so that every surviving result stays
on the trial, and so the config, it was trained with; what was lost is queued again.

Optuna's journal is a log of operations. A trial has no id in its creation record: its id is the
number of trial creations before it (in studies that exist), and every later record names its
trial by that id. Dropping a damaged creation record would move every later trial's records onto
its neighbour: results on other cells' configs. So the repair reads what each lost record was from
its first bytes (Optuna writes the op code first, then the worker, then the study or trial it
concerns) and:

- a lost trial creation: a placeholder trial takes its place (FAIL, failure ``damaged``), so every
  later trial keeps its id, and every record of the lost trial is dropped; its slot then has no
  trial and the next sweep queues it again;
- a lost param, state or user attribute of a trial: a trial that finished is failed as damaged
  (its records kept, for the record), so its slot runs again; one still waiting or running is left
  to the queue, which finds a dead worker's trial lost;
- a lost heartbeat, intermediate value, study attribute, or second creation of a study that
  exists: nothing depends on it;
- anything else (a lost record whose kind, trial or study cannot be read; a lost study creation or
  deletion): refused, and the journal is left as it was.

The draft is then replayed by Optuna and every finished trial checked: its stored result against
its checksum (which covers its slot: suite.sweep.checksum), or, without one, its RunConfig's
fingerprint against its slot's. A trial that fails is failed as damaged too, so a digit changed in
an otherwise whole line, or a study an older repair shifted, is mended the same way.

Run it with no sweep writing the study: running processes keep byte offsets into the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.sweep.checksum import verify
from suite.sweep.storage import (
    _RECORD_START,
    REPAIR_COMMAND,
    StorageError,
    _free_name,
    _journal_lock,
    _record,
    describe,
    is_url,
)

_WORKER = "bitsweep-repair-journal"  # never a live writer's id (Optuna's are uuid-<thread>)
# Optuna's ops (optuna.storages.journal._storage.JournalOperation)
_CREATE_STUDY, _DELETE_STUDY, _CREATE_TRIAL, _SET_STATE = 0, 1, 4, 6
_TRIAL_DATA = {5, 6, 8}        # param, state, user attr: what a trial's outcome is made of
_HARMLESS = {2, 3, 7, 9, 10}   # study attrs, intermediate values, system attrs (heartbeats), discard
_FAIL, _RUNNING = 3, 0         # TrialState values
_FINISHED = {1, 2, 3}
# The head of a record as Optuna writes it (compact json.dumps, keys in insertion order).
_HEAD = re.compile(rb'\{"op_code":(\d+),(?:"worker_id":"[^"\\]*"'
                   rb'(?:,"(study_id|trial_id)":(\d+)[,}]|,"study_name":("[^"\\]*")[,}])?)?')


class Unrepairable(StorageError):
    """A repair could not keep every result on its own trial; nothing was changed."""


@dataclass(frozen=True)
class Repair:
    """What repair_journal did: the backup, the damaged file's line numbers left out or
    recovered, and the trials whose cells run again (``study: trial N (why)``)."""

    backup: Path
    kept: int
    left_out: tuple[int, ...]
    salvaged: tuple[int, ...]
    requeued: tuple[str, ...] = ()


@dataclass
class _Trial:
    study: int
    number: int
    state: int
    finish: int | None = None  # index in the draft of the record that finished it
    lost_at: int | None = None  # damaged line that held part of its record
    placeholder: bool = False


@dataclass
class _Draft:
    """The repaired journal being built: records (bytes as they were, or dicts rewritten) and the
    replay state Optuna will reach from them, trial ids included."""

    out: list[bytes | dict[str, Any]] = field(default_factory=list)
    studies: dict[str, int] = field(default_factory=dict)  # live studies by name
    next_study: int = 0
    trials: list[_Trial] = field(default_factory=list)
    per_study: dict[int, int] = field(default_factory=dict)
    left_out: list[int] = field(default_factory=list)
    salvaged: list[int] = field(default_factory=list)

    def create_trial(self, study: int, state: int) -> _Trial:
        trial = _Trial(study, self.per_study.get(study, 0), state)
        self.per_study[study] = trial.number + 1
        self.trials.append(trial)
        if state in _FINISHED:
            trial.finish = len(self.out)
        return trial

    def apply(self, record: dict[str, Any], raw: bytes) -> None:
        """Keep an intact record (unless it belongs to a placeholder) and follow its effect."""
        op = record.get("op_code")
        tid = record.get("trial_id")
        if isinstance(tid, int) and 0 <= tid < len(self.trials) and self.trials[tid].placeholder:
            return  # a record of a trial whose creation was lost: it has no trial to go to
        if op == _CREATE_STUDY and record.get("study_name") not in self.studies:
            self.studies[record.get("study_name")] = self.next_study
            self.next_study += 1
        elif op == _DELETE_STUDY:
            self.studies = {n: i for n, i in self.studies.items() if i != record.get("study_id")}
        elif op == _CREATE_TRIAL and record.get("study_id") in self.studies.values():
            self.create_trial(record["study_id"], record.get("state", _RUNNING))
        elif op == _SET_STATE and isinstance(tid, int) and 0 <= tid < len(self.trials):
            trial = self.trials[tid]
            if trial.state not in _FINISHED and record.get("state") in _FINISHED:
                trial.state, trial.finish = record["state"], len(self.out)
        self.out.append(raw)

    def lose(self, fragment: bytes, line: int, where: Path) -> None:
        """Account for a record lost at ``line`` (its bytes, as far as they go)."""
        head = _HEAD.match(fragment)
        op = int(head.group(1)) if head else None
        target = int(head.group(3)) if head and head.group(3) else None
        live = sorted(set(self.studies.values()))
        if op in _HARMLESS:
            return
        if op == _CREATE_TRIAL and not live:
            return  # no study to make a trial in: Optuna skips such a creation
        if op == _CREATE_TRIAL:
            study = target if head.group(2) == b"study_id" else (live[0] if len(live) == 1 else None)
            if study is None:
                raise _refuse(where, line, "it created a trial, in a study it no longer names, of "
                              f"the {len(live)} studies there")
            if study in live:  # else Optuna would not have made a trial of it either
                placeholder = self.create_trial(study, _FAIL)
                placeholder.placeholder, placeholder.lost_at = True, line
                self.out.append({"op_code": _CREATE_TRIAL, "worker_id": _WORKER, "study_id": study,
                                 "datetime_start": None, "state": _FAIL, "value": None,
                                 "values": None, "distributions": {}, "params": {},
                                 "user_attrs": {"failure": "damaged", "error": _lost(line)},
                                 "system_attrs": {}, "intermediate_values": {}})
            return
        if op in _TRIAL_DATA:
            if head.group(2) != b"trial_id":
                raise _refuse(where, line, "it changed a trial whose id is in its damaged part")
            trial = self.trials[target] if target < len(self.trials) else None
            if trial and not trial.placeholder and trial.state not in _FINISHED:
                trial.lost_at = line  # (Optuna ignores what comes after a trial finished)
            return
        if op == _CREATE_STUDY and head.group(4) and json.loads(head.group(4)) in self.studies:
            return  # a second machine creating the same study: Optuna ignores it
        what = "its kind of record" if op is None else f"what its record (op {op}) did"
        raise _refuse(where, line, f"{what} cannot be read from what is left of it")


def _lost(line: int) -> str:
    return (f"damaged: journal line {line} held this trial's creation and was lost; "
            f"`{REPAIR_COMMAND}` kept its place so no other trial's records move, and its cell is "
            "queued again")


def _refuse(where: Path, line: int, why: str) -> Unrepairable:
    return Unrepairable(
        f"journal {where}: line {line} is damaged and {why}, so a repair cannot be sure that every "
        f"later record stays with its own trial; nothing was changed. Restore the journal from a "
        "copy, or start the study again under a new name")


def _split(line: bytes) -> tuple[bytes, bytes | None]:
    """A damaged line as (the part lost, the whole record at its end or None): a record that lacks
    only its newline, or one a writer appended after a torn record."""
    if _record(line) is not None:
        return b"", line.rstrip(b"\r\n") + b"\n"
    start = line.find(_RECORD_START, 1)
    while start > 0:
        if _record(line[start:]) is not None:
            return line[:start], line[start:].rstrip(b"\r\n") + b"\n"
        start = line.find(_RECORD_START, start + 1)
    return line, None


def _build(data: bytes, where: Path) -> _Draft:
    draft = _Draft()
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        record = _record(line) if line.endswith(b"\n") else None
        if record is not None:
            draft.apply(record, line)
            continue
        lost, whole = _split(line)
        if lost.strip():
            draft.lose(lost, number, where)
        if whole is None:
            draft.left_out.append(number)
        else:
            draft.salvaged.append(number)
            draft.apply(_record(whole), whole)
    return draft


def _encode(item: bytes | dict[str, Any]) -> bytes:
    return item if isinstance(item, bytes) else (json.dumps(item, separators=(",", ":")) + "\n").encode()


def _write(path: Path, items: list[bytes | dict[str, Any]]) -> None:
    with path.open("wb") as fh:
        fh.write(b"".join(_encode(i) for i in items))
        os.fsync(fh.fileno())


def _replay(work: Path, journal: Path) -> Any:
    """Optuna's own reading of a draft; an error refuses the repair."""
    import optuna

    try:
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(work)))
    except Exception as err:
        raise StorageError(f"journal {journal}: without its damaged lines Optuna still cannot "
                           f"read it ({err}); nothing was changed") from None


def _is_tuned(user_attrs: dict[str, Any]) -> bool:
    """Whether a study searches some fields inside its cells: its trials' configs then differ
    from their cells', and only a checksum can vouch for them."""
    specs = [user_attrs.get("spec_yaml") or "", *(user_attrs.get("specs") or ())]
    return bool((user_attrs.get("spec") or {}).get("tune")) or any(
        re.search(r"^tune\s*:", text, re.MULTILINE) for text in specs)


def _mismatch(attrs: dict[str, Any], tuned: bool) -> str | None:
    """Why a finished trial's stored outcome is not its own, or None when it is (or cannot be
    told: no checksum, a tuned config, a slot from before slots named their fingerprint)."""
    intact = verify(attrs)
    if intact is not None:
        return None if intact else "its stored config and result do not match their checksum"
    slot, config = attrs.get("slot") or "", attrs.get("config")
    if tuned or "@" not in slot or not isinstance(config, dict):
        return None
    from suite.run.config import RunConfig

    try:
        fingerprint = RunConfig.from_dict(config).fingerprint()
    except (ValueError, TypeError):
        return None
    if fingerprint != slot.rpartition("@")[2]:
        return f"its stored config (fingerprint {fingerprint}) is not its slot's ({slot})"
    return None


def _check(storage: Any, draft: _Draft) -> dict[int, str]:
    """Trial id -> why it is failed as damaged: it lost part of its record, or its outcome is not
    its own (_mismatch). Trials still waiting or running are left to the queue."""
    bad: dict[int, str] = {}
    for frozen in storage.get_all_studies():
        tuned = _is_tuned(frozen.user_attrs)
        for t in storage.get_all_trials(frozen._study_id, deepcopy=False):  # noqa: SLF001
            tid = t._trial_id  # noqa: SLF001
            mine = draft.trials[tid] if tid < len(draft.trials) else None
            if mine is None or (mine.study, mine.number) != (frozen._study_id, t.number):  # noqa: SLF001
                raise Unrepairable(f"trial {t.number} of study {frozen.study_name!r} is not where "
                                   "the repair expected it; nothing was changed")
            if mine.placeholder or t.state.value not in _FINISHED or t.state.value == _FAIL:
                continue
            why = (f"journal line {mine.lost_at} held part of its record and was lost"
                   if mine.lost_at is not None else _mismatch(t.user_attrs, tuned))
            if why:
                bad[tid] = why
    return bad


def _fail(draft: _Draft, bad: dict[int, str]) -> list[bytes | dict[str, Any]]:
    """The draft with each bad trial failed as damaged where it finished: its finishing record
    becomes FAIL, after its failure and error (records after it are ignored by Optuna)."""
    before: dict[int, list[dict[str, Any]]] = {}
    out = list(draft.out)
    for tid, why in bad.items():
        at = draft.trials[tid].finish
        record = json.loads(_encode(out[at]))
        error = (f"damaged: {why}; `{REPAIR_COMMAND}` failed it so that its cell runs again "
                 "(the record as it was is in the journal's backup)")
        if record["op_code"] == _CREATE_TRIAL:  # created finished (a W&B agent's run)
            record.update(state=_FAIL, value=None, values=None,
                          user_attrs={**record.get("user_attrs", {}), "failure": "damaged",
                                      "error": error})
        else:
            record.update(state=_FAIL, values=None)
            before[at] = [{"op_code": 8, "worker_id": _WORKER, "trial_id": tid,
                           "user_attr": {key: value}}
                          for key, value in (("failure", "damaged"), ("error", error))]
        out[at] = record
    return [item for i, record in enumerate(out) for item in (*before.get(i, ()), record)]


def _names(storage: Any, draft: _Draft, bad: dict[int, str]) -> tuple[str, ...]:
    """``study: trial N (why)`` for each trial whose cell runs again."""
    names = {s._study_id: s.study_name for s in storage.get_all_studies()}  # noqa: SLF001
    lost = {i: _lost(t.lost_at) for i, t in enumerate(draft.trials) if t.placeholder}
    return tuple(f"{names.get(draft.trials[i].study, '?')}: trial {draft.trials[i].number} "
                 f"({why.removeprefix('damaged: ').split(';')[0]})"
                 for i, why in sorted({**lost, **bad}.items()))


def repair_journal(path: str | Path) -> Repair | None:
    """Rewrite a damaged journal (see the module doc); the original is kept as
    ``<journal>.bak-<time>``. None: every record is whole and every result its own trial's.
    Raises Unrepairable (a StorageError: exit 2) when that cannot be guaranteed."""
    from optuna.storages.journal._file import get_lock_file

    if is_url(str(path)):  # checked on the text: a Path makes sqlite:/// into sqlite:/
        raise StorageError(f"{describe(str(path))} is a database URL; {REPAIR_COMMAND} repairs a "
                           "journal file (e.g. runs/<study>/optuna.journal)")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no journal file at {path}: give the path of the study's journal "
                                "(e.g. runs/<study>/optuna.journal)")
    with get_lock_file(_journal_lock(path)):  # no append lands between reading and replacing
        data = path.read_bytes()
        draft = _build(data, path)
        work = path.with_name(path.name + ".repair-tmp")
        try:
            _write(work, draft.out)
            bad = _check(_replay(work, path), draft)
            if not bad and not draft.left_out and not draft.salvaged:
                work.unlink()
                return None
            final = _fail(draft, bad)
            _write(work, final)
            storage = _replay(work, path)
            still = _check(storage, draft)  # what was failed is no longer checked
            if still:
                raise Unrepairable(f"journal {path}: the repaired journal still holds trials whose "
                                   f"result is not their own ({still}); nothing was changed")
            requeued = _names(storage, draft, bad)
        except BaseException:
            work.unlink(missing_ok=True)
            raise
        backup = _free_name(path, "bak")
        try:  # the original bytes under a new name before the swap; a link costs no space
            os.link(path, backup)
        except OSError:
            shutil.copy2(path, backup)
        os.replace(work, path)
    return Repair(backup, len(final), tuple(draft.left_out), tuple(draft.salvaged), requeued)
