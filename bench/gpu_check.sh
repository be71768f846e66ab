#!/usr/bin/env bash
# The GPU check of issue 10, for a lent GPU machine (one H200: under 8 minutes).
#   here first:   bash bench/gpu_wheels.sh        (the wheels its image lacks, into .whl/)
#   then:         the device tool's run(command="bash bench/gpu_check.sh", carry=[".whl"],
#                 timeout_s=540)
# Runs bench/gpu_check.py: a ~0.5B Llama packed in bf16 (flash-attention varlen when
# flash_attn is installed there, sdpa per packed document otherwise), FSDP2 and ZeRO-3 on the
# one GPU, and the quickstart when its model package is there. Results: bench/results/gpu.*,
# copied to $OUT when the device tool runs it.
# `bash bench/gpu_check.sh --smoke` runs the same steps with a tiny model on this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python  # this machine: the project's venv has everything
elif [ -d .whl ]; then  # the GPU machine's image, with the wheels it lacks
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PYTHON" bench/gpu_check.py "$@"
if [ -n "${OUT:-}" ]; then cp bench/results/gpu*.json bench/results/gpu*.md "$OUT"/; fi
