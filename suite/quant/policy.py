"""Per-layer resolution rules and the keep-fp32 policies, in plain Python (no torch).

RunConfig validates ``layers`` and ``keep_fp32`` with this module, and ``quantize_`` applies them.

A layer rule is ``(pattern, resolution)``: ``pattern`` matches a module's full dotted name as in
``model.named_modules()`` (``"blocks.0.attn.qkv"``), as a shell-style glob (``fnmatch``: ``*``
also matches dots, so ``"*head"`` matches ``"head"`` and ``"lm.head"``) or, prefixed with
``re:``, as a regular expression that must match the whole name (``"re:blocks\\.[0-3]\\..*"``).
``resolution`` is any spelling ``parse_resolution`` accepts, ``fp32`` included. Rules are tried
in order and the first match wins; a layer no rule matches gets the model's resolution.

``keep_fp32`` policies, on the weight layers (the layers ``quantize_`` would quantise) in
``model.named_modules()`` order, i.e. the order in which the model registered them:

``none``   no layer is kept at fp32 by the policy (the default: today's behaviour)
``first``  the first weight layer is kept at fp32 (the stem conv or token embedding of the
           usual model, which registers its layers in the order the input meets them)
``last``   the last weight layer is kept at fp32 (the output head)
``ends``   both

A model that registers its head before its body gets the policy on the wrong layers: name them
with ``layers`` instead. The policy wins over the rules (it is applied first).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from suite.quant.resolution import ACCEPTED_FORMS, Resolution, parse_resolution

KEEP_FP32 = ("none", "first", "last", "ends")
RULE_FORMS = ("'pattern=resolution' strings or {pattern: resolution} mappings, e.g. "
              "['head=fp32', '*attn*=4']; a pattern is a glob on module names, or 're:<regex>'")


@dataclass(frozen=True)
class LayerRule:
    pattern: str
    resolution: Resolution

    def matches(self, name: str) -> bool:
        if self.pattern.startswith("re:"):
            return re.fullmatch(self.pattern[3:], name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)

    def __str__(self) -> str:
        return f"{self.pattern}={self.resolution.label}"


def _pairs(rules: object) -> list[tuple[object, object]]:
    if rules is None:
        return []
    if isinstance(rules, (str, Mapping)):
        rules = [rules]
    if not isinstance(rules, Iterable):
        raise ValueError(f"layer rules must be a list of {RULE_FORMS}; got {rules!r}")
    pairs: list[tuple[object, object]] = []
    for item in rules:
        if isinstance(item, LayerRule):
            pairs.append((item.pattern, item.resolution))
        elif isinstance(item, str):
            pattern, sep, res = item.partition("=")
            if not sep:
                raise ValueError(f"layer rule {item!r} has no '=': use {RULE_FORMS}")
            pairs.append((pattern.strip(), res.strip()))
        elif isinstance(item, Mapping):
            pairs.extend(item.items())
        elif isinstance(item, Sequence) and len(item) == 2:
            pairs.append((item[0], item[1]))
        else:
            raise ValueError(f"bad layer rule {item!r}: use {RULE_FORMS}")
    return pairs


def parse_rules(rules: object) -> tuple[LayerRule, ...]:
    """Layer rules from any accepted form; ValueError naming the bad rule and the fix."""
    out = []
    for pattern, res in _pairs(rules):
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError(f"layer rule pattern {pattern!r} must be a non-empty string")
        if "=" in pattern:
            # "=" separates pattern and resolution in the string form; module names never hold it
            raise ValueError(f"layer rule pattern {pattern!r} must not contain '='")
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as err:
                raise ValueError(f"layer rule pattern {pattern!r} is not a regular expression: "
                                 f"{err}") from None
        try:
            resolution = parse_resolution(res)
        except ValueError:
            raise ValueError(f"layer rule {pattern}={res!r}: bad resolution; accepted: "
                             f"{ACCEPTED_FORMS}") from None
        out.append(LayerRule(pattern.strip(), resolution))
    return tuple(out)


def rule_strings(rules: object) -> tuple[str, ...]:
    """The canonical ``pattern=label`` spelling of each rule (RunConfig stores these)."""
    return tuple(str(r) for r in parse_rules(rules))


def check_keep_fp32(policy: str) -> str:
    if policy not in KEEP_FP32:
        raise ValueError(f"unknown keep_fp32 policy {policy!r}; choose one of {', '.join(KEEP_FP32)}")
    return policy


def resolve(names: Sequence[str], default: Resolution, rules: Sequence[LayerRule] = (),
            keep_fp32: str = "none") -> dict[str, tuple[Resolution, str]]:
    """Each weight layer's resolution and why (``keep_fp32=first``, ``rule <pattern>``, or
    ``default``), for the weight layers ``names`` in module order."""
    check_keep_fp32(keep_fp32)
    kept: set[str] = set()
    if names and keep_fp32 in ("first", "ends"):
        kept.add(names[0])
    if names and keep_fp32 in ("last", "ends"):
        kept.add(names[-1])
    fp32 = parse_resolution("fp32")
    out: dict[str, tuple[Resolution, str]] = {}
    for name in names:
        if name in kept:
            out[name] = (fp32, f"keep_fp32={keep_fp32}")
            continue
        rule = next((r for r in rules if r.matches(name)), None)
        out[name] = (rule.resolution, f"rule {rule}") if rule else (default, "default")
    return out
