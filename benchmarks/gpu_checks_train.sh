#!/usr/bin/env bash
# Issue 3's GPU checks in one device call (~7 min on one H100 or H200, compile included): the CUDA-only tests of
# document-masked attention (FlexAttention), then benchmarks/train_gpu.py's MFU on causal rows and on rows of 4
# packed documents. Needs no installed herd (PYTHONPATH) and no wheels: the device image has herd's imports.
# Usage (repo root, on the GPU machine): bash benchmarks/gpu_checks_train.sh [output folder]
set -uo pipefail
out=${1:-${OUT:-/tmp}}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_flex_attention.py 2>&1 | tail -5 | tee "$out/tests.txt"
for documents in 1 4; do
  timeout 210 python3 benchmarks/train_gpu.py --documents "$documents" 2>&1 | tail -8 | tee "$out/train_gpu_documents$documents.txt"
done
