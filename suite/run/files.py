"""What a run directory holds: its files' names and the columns of its per-epoch curves. Plain
Python (the report and the packer read run directories without torch).

    config.json        the RunConfig (fields added later left out while at their old value)
    model.json         the model spec: rebuilds the architecture (a user model's import string
                       and arguments included)
    model.safetensors  the trained fp32 shadow weights: with model.json they reproduce the
                       quantised forward exactly (the grid values and steps derive from them)
    model.bsw          the same model packed at its real bit size (``bitsweep unpack``)
    curves.csv         one row per epoch (CURVE_COLUMNS)
    result.json        the RunResult, written last
    wandb_run.txt      where the run's W&B files are
"""

from __future__ import annotations

CONFIG_NAME = "config.json"
SPEC_NAME = "model.json"
WEIGHTS_NAME = "model.safetensors"
PACKED_NAME = "model.bsw"
CURVES_NAME = "curves.csv"
RESULT_NAME = "result.json"
WANDB_RUN_NAME = "wandb_run.txt"
RUN_FILES: tuple[str, ...] = (CONFIG_NAME, SPEC_NAME, WEIGHTS_NAME, PACKED_NAME, CURVES_NAME,
                              RESULT_NAME, WANDB_RUN_NAME)

# curves.csv's columns, in order: EpochRecorder writes them (one W&B history row per epoch too),
# and the report's curves frame reads them, renaming by CURVE_RENAMED (the per-epoch learning
# rate must not clash with the configured ``lr`` there).
CURVE_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                  "val_ppl", "grad_norm", "flip_rate", "oscillation", "lr")
CURVE_RENAMED: dict[str, str] = {"lr": "lr_epoch"}
