#!/bin/bash
# MAE pretraining against random initialisation on a real image set, end to end through train.py / eval.py:
#   bash scripts/run_pretrain_transfer.sh DATA_DIR OUT_DIR
# DATA_DIR: train/<class>/* and val/<class>/* (e.g. python scripts/prepare_digit_folders.py DATA_DIR).
# Environment: LABELS_PER_CLASS (100), PRETRAIN_STEPS (1860) or PRETRAIN_EPOCHS, FINETUNE_EPOCHS, LINPROBE_EPOCHS
# (the configs'), SEED (0), BATCH_SIZE. See scripts/pretrain_transfer.py; the last line printed is one JSON object.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: bash scripts/run_pretrain_transfer.sh DATA_DIR OUT_DIR" >&2
    exit 2
fi
export GLOG_v=${GLOG_v:-3}  # MindSpore: errors only
DATA=$(realpath -m "$1")
OUT=$(realpath -m "$2")
cd "$(dirname "$0")/.."
exec python scripts/pretrain_transfer.py "$DATA" "$OUT"
