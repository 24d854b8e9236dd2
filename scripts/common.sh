# Shared by the run_*.sh scripts: argument checks and the output folder. Source it after setting USAGE.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
export GLOG_v=${GLOG_v:-2}  # MindSpore: warnings and errors

usage() {
    echo "usage: $USAGE" >&2
    [ $# -gt 0 ] && echo "error: $*" >&2
    exit 1
}

# check_paths CONFIG_PATH DATA_PATH: both must exist
check_paths() {
    [ -f "$1" ] || usage "config file not found: $1"
    [ -e "$2" ] || usage "data path not found: $2"
}

# training_paths CONFIG_PATH DATA_PATH [TRAIN_URL] [train.py args...]: checks the paths and sets CONFIG_PATH,
# DATA_PATH and TRAIN_URL (absolute; the optional positional one, else the train_url the config and the
# arguments give) and ARGS_TAKEN, the number of arguments to shift
training_paths() {
    check_paths "$1" "$2"
    CONFIG_PATH=$(realpath "$1")
    DATA_PATH=$(realpath "$2")
    shift 2
    if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
        TRAIN_URL=$(realpath -m "$1")
        ARGS_TAKEN=3
        return
    fi
    TRAIN_URL=$(cd "$ROOT" && "$PYTHON" -c 'import sys
from src.args import parse_args
from src.errors import report_user_errors
print(report_user_errors(parse_args)(sys.argv[1:]).train_url)' --config "$CONFIG_PATH" "$@") || exit 1
    TRAIN_URL=$(cd "$ROOT" && realpath -m "$TRAIN_URL")
    ARGS_TAKEN=2
}
