#!/usr/bin/env bash
# Rebuild the committed calibration data derived from public measurements (issue 15):
# gpu_models/data/calibration/deepbench_<gpu>_<precision>.json (Baidu DeepBench's published
# GEMM and convolution timings) and trace_<gpu>_<network>.json (digests of two public
# PyTorch profiler traces: per-step and per-kernel-class totals, one step's kernels).
#
#   scripts/import_published_data.sh [REFERENCE_DIR]
#
# REFERENCE_DIR holds deepbench/ and traces/ as shared/reference/ has them (their READMEs
# give the provenance repeated below); default ../shared/reference next to the repository.
# Run from the repository root with gpusim installed. Every file records the command that
# wrote it; nothing in them is edited by hand.
set -euo pipefail

ref="${1:-../shared/reference}"
out=gpu_models/data/calibration
db="$ref/deepbench"
tr="$ref/traces"
source_db() {
    echo "baidu-research/DeepBench results/train/DeepBench_NV_$1.xlsx at commit da81ba7 (Apache-2.0), as exported to shared/reference/deepbench/$2"
}

deepbench() {  # preset precision layout file-prefix sheet-name
    gpusim calibrate import-deepbench "$db/$4_$2_gemm.csv" "$db/$4_$2_conv.csv" \
        --gpu-name "$1" --precision "$2" --layout "$3" --specs "$db/$4_specs.txt" \
        --notes-in-times --source "$(source_db "$5" "$4_$2_{gemm,conv}.csv")" \
        --out "$out/deepbench_$1_$2.json"
}

deepbench t4 fp32 nchw t4 T4
deepbench t4 fp16 nhwc t4 T4
deepbench titan-xp fp32 nchw titanxp TitanXp
deepbench p100 fp32 nchw p100 P100
deepbench p100 fp16 nchw p100 P100
deepbench gtx-1080ti fp32 nchw 1080ti 1080Ti

gpusim calibrate ingest "$tr/a100_resnet50_train_b32_tf32_ddp.json.gz" \
    --out "$out/trace_a100-40gb_resnet50.json" --gpu-name a100-40gb --precision tf32 \
    --batch 32 --workload resnet50 --framework pytorch-ddp \
    --source "facebookresearch/HolisticTraceAnalysis tests/data/nccl_parser_config/nccl_data.json.gz (MIT), as shared/reference/traces/a100_resnet50_train_b32_tf32_ddp.json.gz"

gpusim calibrate ingest "$tr/rtx2080ti_resnet18_train_b128.json.gz" \
    --out "$out/trace_rtx-2080ti_resnet18.json" --gpu-name rtx-2080ti --precision fp32 \
    --batch 128 --step-marker Optimizer.zero_grad --workload resnet18 --framework pytorch-wd \
    --source "facebookresearch/param train/compute/python/test/data/resnet_kineto.json.gz (MIT), as shared/reference/traces/rtx2080ti_resnet18_train_b128.json.gz"
