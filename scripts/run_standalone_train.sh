#!/bin/bash
# Training on one device (DEVICE_ID, default 0); the log is also written to TRAIN_URL/log/train.log.
#
#   bash scripts/run_standalone_train.sh CONFIG_PATH DATA_PATH [TRAIN_URL] [train.py args...]
set -uo pipefail
USAGE="bash $0 CONFIG_PATH DATA_PATH [TRAIN_URL] [train.py args...]"
source "$(dirname "$0")/common.sh"

[ $# -ge 2 ] || usage "expected at least 2 arguments, got $#"
training_paths "$@"
shift "$ARGS_TAKEN"
mkdir -p "$TRAIN_URL/log"
cd "$ROOT" || exit 1
"$PYTHON" train.py --config "$CONFIG_PATH" --data_url "$DATA_PATH" --train_url "$TRAIN_URL" \
    --device_id "${DEVICE_ID:-0}" --device_num 1 "$@" 2>&1 | tee "$TRAIN_URL/log/train.log"
exit "${PIPESTATUS[0]}"
