#!/usr/bin/env bash
# The GPU check on a bare GPU machine without network (its own torch, timm, transformers, rich, pyyaml):
# first, where pip reaches PyPI, `make gpu-wheels` (fills .whl/); then, on the GPU machine, from the repository root:
#   bash bench/gpu_check.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
site=${LIT_GPU_SITE:-/tmp/lit-gpu-site}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -c 'import torch; print("gpu-check: torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.is_available())'
python3 -m bench.gpu_check --out "${1:-bench/out/gpu}"
