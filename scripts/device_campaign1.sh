#!/usr/bin/env bash
# Device campaign 1 (issue 6): block scheduling, concurrency and bandwidth microbenchmarks.
#
#   scripts/device_campaign1.sh --quick [OUT_DIR]   # short pass, under 2 minutes
#   scripts/device_campaign1.sh [OUT_DIR]           # full pass, under 8 minutes
#
# Runs on a machine with an NVIDIA GPU and CuPy (python3 there must import cupy; the engine
# and SimPy are not needed). Writes OUT_DIR/<gpu>/<experiment>.json (6 files) and
# OUT_DIR/campaign1_<mode>.log. OUT_DIR defaults to $OUT (the device tool's folder), else
# ./campaign1_out. Commit OUT_DIR/<gpu>/*.json of the full pass to
# sim/measure/data/micro/<gpu>/ (see sim/measure/micro/README.md).
set -uo pipefail

mode=full
args=()
if [[ "${1:-}" == "--quick" ]]; then
    mode=quick
    args=(--quick)
    shift
fi
out_dir="${1:-${OUT:-campaign1_out}}"
python="${PYTHON:-python3}"
# Whole-run ceilings: the per-experiment budgets end well inside them; this only stops a hang.
if [[ $mode == quick ]]; then limit_s=150; else limit_s=530; fi

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out_dir"
log="$out_dir/campaign1_${mode}.log"
unset CUDA_DEVICE_MAX_CONNECTIONS  # the queue experiment sets it per child process
export PYTHONUNBUFFERED=1

{
    echo "== campaign 1 ($mode) $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(pwd)"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu,compute_mode \
        --format=csv || echo "nvidia-smi failed"
    "$python" -c "import sys, cupy; print('python', sys.version.split()[0], 'cupy', cupy.__version__)" \
        || { echo "cannot import cupy with $python"; exit 2; }
    start=$(date +%s)
    timeout "$limit_s" "$python" -m sim.measure.micro run "${args[@]}" --out "$out_dir"
    rc=$?
    echo "== exit $rc after $(( $(date +%s) - start )) s"
    find "$out_dir" -name '*.json' -printf '%s bytes  %p\n' | sort -k3
    exit $rc
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
