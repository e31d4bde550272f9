#!/usr/bin/env bash
# serl's GPU checks in one call (issue 16); scripts/gpu_check.py says what each check does.
#   bash scripts/gpu_check.sh --prepare      # first, on a CPU machine with a package registry: fills .gpucheck/
#   bash scripts/gpu_check.sh                # on the GPU machine: $OUT/gpu_check.json and $OUT/gpu_check.log
#   bash scripts/gpu_check.sh --dry-run --out DIR   # on CPU, tiny (tests/test_gpu_check.py runs it)
# PYTHON picks the interpreter: the GPU image's python3 by default (it holds PyTorch), the venv's in the dry mode.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python3
  if [[ " $* " == *" --dry-run "* || " $* " == *" --prepare "* ]] && [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" scripts/gpu_check.py "$@"
