#!/bin/bash
# Data-parallel training, one process per device.
#
#   bash scripts/run_distribute_train.sh DEVICE_NUM CONFIG_PATH DATA_PATH [TRAIN_URL] [train.py args...]
#
# Ascend with RANK_TABLE_FILE set: the model zoo's rank-table launch, one process per device with
# DEVICE_ID = DEVICE_START + i and RANK_ID = RANK_START + i (logs: TRAIN_URL/log/rank_<RANK_ID>.log).
# Otherwise MindSpore's msrun, on Ascend, GPU or CPU (logs: TRAIN_URL/log/worker_<rank>.log).
# Several nodes with msrun: run this on every node with DEVICE_NUM = the workers on that node and
#   WORKER_NUM   workers on all nodes together (default DEVICE_NUM)
#   NODE_RANK    this node's index, 0 on the master (msrun --node_rank; default: assigned by msrun)
#   MASTER_ADDR  the master node's address (default 127.0.0.1), MASTER_PORT its port (default 8118)
# Several nodes with a rank table: RANK_SIZE (all devices) and RANK_START (this node's first rank).
# CLUSTER_TIME_OUT: seconds msrun waits for all workers to join (default 600).
set -uo pipefail
USAGE="bash $0 DEVICE_NUM CONFIG_PATH DATA_PATH [TRAIN_URL] [train.py args...]"
source "$(dirname "$0")/common.sh"

[ $# -ge 3 ] || usage "expected at least 3 arguments, got $#"
DEVICE_NUM=$1
[[ "$DEVICE_NUM" =~ ^[1-9][0-9]*$ ]] || usage "DEVICE_NUM must be a positive integer, got '$DEVICE_NUM'"
shift
training_paths "$@"
shift "$ARGS_TAKEN"
LOG_DIR="$TRAIN_URL/log"
mkdir -p "$LOG_DIR"
cd "$ROOT" || exit 1
TRAIN_ARGS=(train.py --config "$CONFIG_PATH" --data_url "$DATA_PATH" --train_url "$TRAIN_URL" "$@")

# after SIGTERM / SIGINT was passed to the workers: the first worker's "interrupted by ..." line, exit 128 + signal
report_interrupted() {
    INTERRUPTED=$(grep -h -m1 -o "interrupted by SIG.*" "$1" 2>/dev/null)
    echo "${INTERRUPTED:-error: interrupted by SIG$SIGNAL before the workers could save}" >&2
    exit $((128 + $(kill -l "$SIGNAL")))
}

if [ -n "${RANK_TABLE_FILE:-}" ]; then
    [ -f "$RANK_TABLE_FILE" ] || usage "RANK_TABLE_FILE not found: $RANK_TABLE_FILE"
    export RANK_TABLE_FILE RANK_SIZE=${RANK_SIZE:-$DEVICE_NUM}
    echo "rank-table launch of $DEVICE_NUM processes (ranks from ${RANK_START:-0}, $RANK_SIZE in all); logs in $LOG_DIR"
    PIDS=()
    for ((i = 0; i < DEVICE_NUM; i++)); do
        DEVICE_ID=$((${DEVICE_START:-0} + i)) RANK_ID=$((${RANK_START:-0} + i)) \
            "$PYTHON" "${TRAIN_ARGS[@]}" --device_target Ascend --device_num "$RANK_SIZE" \
            > "$LOG_DIR/rank_$((${RANK_START:-0} + i)).log" 2>&1 &
        PIDS+=($!)
    done
    SIGNAL=
    trap 'SIGNAL=TERM; kill -s TERM "${PIDS[@]}" 2>/dev/null' TERM
    trap 'SIGNAL=INT; kill -s INT "${PIDS[@]}" 2>/dev/null' INT
    STATUS=0
    for ((i = 0; i < DEVICE_NUM; i++)); do
        wait "${PIDS[$i]}"
        CODE=$?
        while kill -0 "${PIDS[$i]}" 2>/dev/null; do  # a trapped signal interrupts wait
            wait "${PIDS[$i]}"
            CODE=$?
        done
        if [ -n "$SIGNAL" ]; then
            continue
        fi
        if [ $CODE -ne 0 ]; then
            RANK=$((${RANK_START:-0} + i))
            echo "error: rank $RANK exited with status $CODE; see $LOG_DIR/rank_$RANK.log" >&2
            STATUS=1
        fi
    done
    if [ -n "$SIGNAL" ]; then
        report_interrupted "$LOG_DIR/rank_${RANK_START:-0}.log"
    fi
    exit $STATUS
fi

WORKER_NUM=${WORKER_NUM:-$DEVICE_NUM}
MSRUN_ARGS=(--worker_num="$WORKER_NUM" --local_worker_num="$DEVICE_NUM" --master_addr="${MASTER_ADDR:-127.0.0.1}"
            --master_port="${MASTER_PORT:-8118}" --log_dir="$LOG_DIR" --join=True
            --cluster_time_out="${CLUSTER_TIME_OUT:-600}")
[ -n "${NODE_RANK:-}" ] && MSRUN_ARGS+=(--node_rank="$NODE_RANK")
echo "msrun launch of $DEVICE_NUM of $WORKER_NUM workers; logs in $LOG_DIR"
msrun "${MSRUN_ARGS[@]}" "${TRAIN_ARGS[@]}" --device_num "$WORKER_NUM" > >(tee "$LOG_DIR/msrun.log") 2>&1 &
MSRUN_PID=$!
# SIGTERM / SIGINT go to the workers (not msrun's scheduler): they finish the step in flight, save and stop
# together; a second signal makes them exit at once
SIGNAL=
forward() {
    SIGNAL=$1
    for PID in $(pgrep -P "$MSRUN_PID"); do
        if tr '\0' '\n' < "/proc/$PID/environ" 2>/dev/null | grep -qx "MS_ROLE=MS_WORKER"; then
            kill -s "$SIGNAL" "$PID" 2>/dev/null
        fi
    done
}
trap 'forward TERM' TERM
trap 'forward INT' INT
wait "$MSRUN_PID"
STATUS=$?
while kill -0 "$MSRUN_PID" 2>/dev/null; do  # a trapped signal interrupts wait; msrun is still running
    wait "$MSRUN_PID"
    STATUS=$?
done
if [ -n "$SIGNAL" ]; then
    report_interrupted "$LOG_DIR/worker_0.log"
fi
if [ "$STATUS" -ne 0 ]; then
    "$PYTHON" scripts/msrun_failure.py "$LOG_DIR" >&2
    exit "$STATUS"
fi
