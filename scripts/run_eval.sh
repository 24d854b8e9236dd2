#!/bin/bash
# Evaluation of a checkpoint on one device (DEVICE_ID, default 0).
#
#   bash scripts/run_eval.sh CONFIG_PATH DATA_PATH CHECKPOINT [eval.py args...]
# CHECKPOINT is a file or a published name (python conv_pt2ckpt.py --list_pretrained).
set -uo pipefail
USAGE="bash $0 CONFIG_PATH DATA_PATH CHECKPOINT [eval.py args...]"
source "$(dirname "$0")/common.sh"

[ $# -ge 3 ] || usage "expected at least 3 arguments, got $#"
check_paths "$1" "$2"
# a bare word (no folder, no extension) is a published name, which eval.py looks up
[ -f "$3" ] || [[ "$3" != */* && "$3" != *.* ]] || usage "checkpoint not found: $3"
CONFIG_PATH=$(realpath "$1")
DATA_PATH=$(realpath "$2")
CHECKPOINT=$3
[ -f "$3" ] && CHECKPOINT=$(realpath "$3")
shift 3
cd "$ROOT" || exit 1
"$PYTHON" eval.py --config "$CONFIG_PATH" --data_url "$DATA_PATH" --pretrained "$CHECKPOINT" \
    --device_id "${DEVICE_ID:-0}" "$@"
