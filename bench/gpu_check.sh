#!/usr/bin/env bash
# The GPU check of the paper-scale work (bench/gpu_check.py says what it measures), in under
# 8 minutes on one GPU. It installs nothing and needs no network: run it where the project is
# installed with a CUDA build of torch, e.g. after (on a machine with a package index)
#     python -m pip install torch==2.13.0 && python -m pip install -e '.[dev]'
#
#     bash bench/gpu_check.sh [--quick]          # figures to $OUT, else ./gpu_check/
#     BITSWEEP_GPU_CHECK_DEVICE=cpu bash bench/gpu_check.sh --quick   # the CPU path
#
# Writes gpu_check.json, gpu_check.md and gpu_tests.xml (the GPU tests' pytest report) and
# prints the markdown; exits 1 if a GPU test failed (or skipped on a GPU) or a loss was not finite.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-./gpu_check}"
mkdir -p "$out"
# offline by construction: W&B never syncs, pip (if anything called it) finds no index
export WANDB_MODE=offline WANDB_SILENT=true CI=true PIP_NO_INDEX=1
exec timeout 470 "${PYTHON:-python}" bench/gpu_check.py --out "$out" "$@"
