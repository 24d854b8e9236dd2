#!/bin/bash
# A few-minute CPU demo with no download: scikit-learn's digits in the CIFAR-10 layout, a tiny BiT
# trained on them, eval.py on the best checkpoint, and the run's curves (plot_curves.py).
#   bash scripts/run_demo.sh [OUT_DIR]        (DEMO_EPOCHS=N to train longer or shorter; default 8)
set -euo pipefail
export GLOG_v=${GLOG_v:-3}  # MindSpore: errors only
OUT=$(realpath -m "${1:-$(dirname "$0")/../output/demo}")
cd "$(dirname "$0")/.."
DATA="$OUT/digits-cifar-10-batches-bin"
CONFIG=src/configs/bit_tiny_cifar10_cpu.yaml

python scripts/prepare_digits_cifar10.py "$DATA"
python train.py --config "$CONFIG" --data_url "$DATA" --train_url "$OUT" --epochs "${DEMO_EPOCHS:-8}" --batch_size 32 \
    --warmup_length 1 --log_interval 20
CKPT=$(ls "$OUT"/ckpt_best_0000/*.ckpt | head -n 1)
python eval.py --config "$CONFIG" --data_url "$DATA" --pretrained "$CKPT" | tee "$OUT/eval.log"
TOP1=$(tail -n 1 "$OUT/eval.log" | python -c "import json, sys; print(json.load(sys.stdin)['top1'])")
python plot_curves.py "$OUT"
echo "demo finished: top-1 on the held-out digits = $TOP1 (checkpoint $CKPT)"
