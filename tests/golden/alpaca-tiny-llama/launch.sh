#!/usr/bin/env bash
# Written by sft-launch: runs "alpaca-tiny-llama" on this machine with 2 process(es).
# Re-run by hand (add --resume to continue from the newest checkpoint):
#   bash <RUNS>/golden-run/launch.sh [--resume]
set -euo pipefail
cd "$(dirname "$0")"
export OMP_NUM_THREADS=1
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1  # Hub models and datasets were fetched into the cache when the run was planned
export WANDB_DIR="$PWD"
export WANDB_MODE=offline
# The supervisor starts the workers (`accelerate launch` with the options after --)
# and, when one dies, restarts them from the newest complete checkpoint (train.max_restarts).
exec /opt/venv/bin/python -m launcher.worker.supervisor . "$@" -- \
  --config_file accelerate.yaml \
  --main_process_port "${SFT_LAUNCH_PORT:-35932}"
