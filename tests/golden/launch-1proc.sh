#!/usr/bin/env bash
# Written by sft-launch: runs "quickstart" on this machine with 1 process(es).
# Re-run by hand (add --resume to continue from the newest checkpoint):
#   bash <RUNS>/golden-run/launch.sh [--resume]
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=2
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1  # Hub models and datasets were fetched into the cache when the run was planned
export WANDB_DIR="$PWD"
export WANDB_MODE=offline
# The supervisor starts the workers
# and, when one dies, restarts them from the newest complete checkpoint (train.max_restarts).
# One plain worker process: no launcher in between (`accelerate launch` with accelerate.yaml
# starts the same process, 2.5 s later).
exec /opt/venv/bin/python -m launcher.worker.supervisor . "$@"
