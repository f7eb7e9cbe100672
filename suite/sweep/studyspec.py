"""Which spec a study was made with, so that a second sweep file under the same study name does
not merge its runs silently into another grid.

A study keeps the hash of every spec it holds (study user attr ``spec_hashes``) and their YAML
(``specs``, shown by the report). The hash covers what decides the study's runs: each slot's
identity (its RunConfig's fingerprint and repeat), the tuned parameters and the objective; not
where or how fast it runs (workers, storage, W&B project, description), so changing those
resumes as before. A spec with another hash is refused unless the sweep is asked to extend the
study. A study made before studies kept their hash adopts the spec it is next run with.

Light: the report imports the attribute names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from suite.sweep.spec import SweepSpec

SPEC_HASHES_ATTR = "spec_hashes"
SPECS_ATTR = "specs"
EXTEND_FLAG = "--extend"


class OtherSpec(ValueError):
    """The study holds another spec's runs; the message gives the two ways on."""


def spec_runs(spec: SweepSpec) -> set[str]:
    """The identity of every run the spec asks for (suite.sweep.slots.slot_identity)."""
    from suite.sweep.slots import slot_identity, slot_key

    return {slot_identity(slot_key(spec.key(cell), repeat, cell.fingerprint()))
            for cell in spec.cells for repeat in range(spec.trials_per_cell)}


def spec_hash(spec: SweepSpec) -> str:
    """A short hash of what decides the runs of a study (see the module doc)."""
    content = {"runs": sorted(spec_runs(spec)),
               "tune": [dataclasses.asdict(p) for p in spec.tune],
               "objective": [spec.metric, spec.direction], "pruner": spec.pruner}
    text = json.dumps(content, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def adopt_spec(study: optuna.Study, spec: SweepSpec, spec_yaml: str, *, extend: bool,
               where: str) -> bool:
    """Record ``spec`` as the study's, or refuse it (OtherSpec) when the study holds another spec
    and ``extend`` is off. Returns True when the spec was added to a study that had others.

    Call it under the queue lock: of two sweeps started together with different specs, one
    adopts and the other is refused.
    """
    attrs: dict[str, Any] = study.user_attrs
    known = list(attrs.get(SPEC_HASHES_ATTR) or ())
    digest = spec_hash(spec)
    if digest in known:
        return False
    if known and not extend:
        raise OtherSpec(_refusal(study, spec, where))
    study.set_user_attr(SPEC_HASHES_ATTR, [*known, digest])
    study.set_user_attr(SPECS_ATTR, [*(attrs.get(SPECS_ATTR) or ()), spec_yaml])
    return bool(known)


def record_spec(study: optuna.Study, spec: SweepSpec, url: str, *, extend: bool) -> bool:
    """Adopt ``spec`` under the storage's queue lock (OtherSpec when the study holds another and
    ``extend`` is off; the study is then left as it was) and record it as the study's current
    spec. Every path that adds runs to a study (a sweep, a W&B agent's run) calls this first."""
    from suite.sweep.queue import queue_lock
    from suite.sweep.storage import describe, redact_all

    text = spec_yaml(spec)
    with queue_lock(url):
        added = adopt_spec(study, spec, text, extend=extend, where=describe(url))
    study.set_user_attr("spec", redact_all(spec.raw))  # a storage: URL's password stays out
    study.set_user_attr("spec_yaml", text)
    return added


def spec_yaml(spec: SweepSpec) -> str:
    """The sweep file as written (comments kept), or its parsed form; passwords redacted."""
    import yaml

    from suite.sweep.storage import redact, redact_all

    if spec.path and Path(spec.path).is_file():
        return redact(Path(spec.path).read_text())
    return yaml.safe_dump(redact_all(spec.raw), sort_keys=False)


def _refusal(study: optuna.Study, spec: SweepSpec, where: str) -> str:
    from suite.sweep.slots import slot_identity

    stored = {slot_identity(t.user_attrs["slot"], t.user_attrs.get("config"))
              for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot")}
    wanted = spec_runs(spec)
    file = spec.path or "the sweep file"
    return (f"study {spec.study!r} in {where} was made with another spec (its grid, tune or "
            f"objective differ: {len(wanted - stored)} run(s) of {file} are not in it, "
            f"{len(stored - wanted)} of its run(s) are not in {file}); nothing was changed. "
            f"Either give this sweep its own study (a new `study:` name in {file}), or pass "
            f"{EXTEND_FLAG} to add its runs to the study (its report then lists every spec)")
