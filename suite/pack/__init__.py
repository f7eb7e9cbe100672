"""Packed models: quantised weights stored at their real bit size (``.bsw`` files).

Modules: codec (level indices <-> a mixed-radix bit stream), format (the versioned ``.bsw`` file:
write a model, read it back, rebuild an inference model), rundir (run directories <-> packed
files: ``bitsweep pack`` / ``bitsweep unpack``).

It sits beside ``suite.quant``, not inside it: a packed file is a storage format built on top of
the quantised layers (it reads their grids) and of the model registry (a run directory is rebuilt
from its model spec), so inside ``suite.quant`` it would make the quantisers depend on the models.
"""

from suite.pack.format import PackError, PackStats, load_packed, packed_to_model, read_packed, save_packed

__all__ = ["PackError", "PackStats", "load_packed", "packed_to_model", "read_packed", "save_packed"]
