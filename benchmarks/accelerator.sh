#!/usr/bin/env bash
# The accelerator benchmark from a plain checkout: no install, no network, no TensorFlow.
#
#   benchmarks/accelerator.sh [--smoke] [--only=roofline,loss,step,torch,augment] OUT_DIR
#
# Appends one JSON line per measurement to OUT_DIR/results.jsonl as it is measured and writes
# OUT_DIR/results.md; see benchmarks/accelerator.py for the sections. Python: $PYTHON, else
# python3. Pure-Python wheels in benchmarks/wheels/ (`make accelerator-wheels`) go on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
path="$root"
for wheel in "$root"/benchmarks/wheels/*.whl; do
  [ -e "$wheel" ] && path="$path:$wheel"
done
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
cd "$root"
exec "${PYTHON:-python3}" "$root/benchmarks/accelerator.py" "$@"
