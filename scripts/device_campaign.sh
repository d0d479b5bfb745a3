#!/usr/bin/env bash
# The device campaign (issue 19), one pass in one command on a machine with an NVIDIA GPU:
#   1 contention (two kernels sharing SMs: FMA, timer-spin, sleep, copy), 2 waves, leftover,
#   priorities and queues, 3 DRAM bandwidth vs resident warps, 4 CUDA's occupancy API,
#   5 launch overhead (CuPy, this process), then 6 GoogLeNet and Inception-v3, serial vs
#   branches, eager and CUDA graph, with one profiled step each (PyTorch, a child process).
#
#   bash scripts/device_campaign.sh --quick [ARGS...]   # smoke pass, at most 2 minutes
#   bash scripts/device_campaign.sh [ARGS...]           # full pass, at most 8 minutes
#
# ARGS: --max-s N  a shorter pass (every step's budget scales down), when device time is short;
#       anything else goes to `python3 -m sim.measure.micro run` (--only STEP..., --raw, ...).
# Needs python3 with numpy, networkx, CuPy and PyTorch (the device image has them); the engine
# and SimPy are not needed. Writes into $OUT (the device tool's folder; else ./campaign_out)
# six files, within the tool's return limits (8 files, 16 MiB each): campaign.log (this
# output), campaign.json (per step: status, cases, budget, seconds), micro.tar.gz (the
# block-level results), netbench_runs.json, calibration.tar.gz and log.txt (the networks).
# What to do with them: sim/measure/micro/README.md.
set -uo pipefail

mode=full
max_s=""
args=()
while (($#)); do
    case "$1" in
        --quick) mode=quick; args+=(--quick) ;;
        --max-s) max_s="${2:?--max-s needs a number of seconds}"; shift ;;
        *) args+=("$1") ;;
    esac
    shift
done
if [[ -z $max_s ]]; then
    if [[ $mode == quick ]]; then max_s=120; else max_s=480; fi
fi
# The hard stop: a little above the pass limit (the steps' budgets end inside it), well
# below the device tool's 10-minute command limit.
hard_s=$((max_s + 15))
python="${PYTHON:-python3}"

cd "$(dirname "$0")/.." || exit 2
out_dir="${OUT:-campaign_out}"
mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)"
unset CUDA_DEVICE_MAX_CONNECTIONS  # the queue step sets it per child process
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

{
    echo "== device campaign ($mode, limit ${max_s} s) $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(pwd)"
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.limit,compute_mode \
        --format=csv || echo "nvidia-smi failed"
    "$python" -c "import sys, numpy, networkx; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'networkx', networkx.__version__)" \
        || { echo "python3 lacks numpy or networkx"; exit 2; }
    "$python" -c "import cupy; print('cupy', cupy.__version__)" \
        || echo "cannot import cupy: the block-level steps will fail (the networks still run)"
    left=$((max_s - ($(date +%s) - start)))
    timeout -k 5 "$hard_s" "$python" -m sim.measure.micro run "${args[@]}" --out "$out_dir" \
        --max-s "$left"
    rc=$?
    [[ $rc == 124 || $rc == 137 ]] && echo "== stopped at the hard limit of ${hard_s} s"
    echo "== exit $rc after $(($(date +%s) - start)) s"
    exit $rc
} 2>&1 | tee "$out_dir/campaign.log"
exit "${PIPESTATUS[0]}"
