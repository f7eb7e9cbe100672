"""The quantisers' choices a RunConfig names: plain Python, so it validates without torch.

suite/quant/scale.py holds the scale rules themselves (objects in a registry); a rule a user
registers there (``register_scale_rule``, in a module of ``$BITSWEEP_PLUGINS`` for a command line
or a sweep's workers) is a choice as soon as that module is loaded.
"""

from __future__ import annotations

import sys

from suite.plugins import load_plugins

SCALE_RULES: tuple[str, ...] = ("gauss", "absmean", "absmax", "lsq", "seq")  # the built-in rules
CONV_NORMS: tuple[str, ...] = ("chw", "c", "hw")  # the axes a bnn conv normalises over


def scale_rule_names() -> tuple[str, ...]:
    """The built-in rules, then any registered in this process (none can be when the registry
    was never imported)."""
    load_plugins()
    registry = sys.modules.get("suite.quant.scale")
    registered = tuple(registry.scale_rules()) if hasattr(registry, "scale_rules") else ()
    return SCALE_RULES + tuple(r for r in registered if r not in SCALE_RULES)
