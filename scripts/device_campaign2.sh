#!/usr/bin/env bash
# Device campaign 2 (issue 7): real layer kernels and multi-stream network runs.
# Run it through the device tool from the repository root, e.g.
#   run(command="bash scripts/device_campaign2.sh --quick", timeout_s=300)   # smoke pass
#   run(command="bash scripts/device_campaign2.sh", timeout_s=540)           # full pass
# Needs only what the device image has (python3 with torch, cupy, numpy, networkx): the
# measuring code never imports the simulator. Output lands in $OUT (at most 8 files).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-./campaign2_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv \
  > "$OUT/nvidia-smi.csv" 2>&1 || true
if [[ "${1:-}" == "--quick" ]]; then
  python3 -m sim.measure.netbench --out "$OUT" --quick --reps 10 --budget-s 90
else
  python3 -m sim.measure.netbench --out "$OUT" --reps 20 --budget-s 420 "$@"
fi
