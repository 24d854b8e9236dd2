"""Draw a run's curves: python plot_curves.py RUN_DIR [--out DIR]

Reads RUN_DIR/metrics.jsonl (written by train.py into its train_url) and writes loss.png (with the
loss scale when it changed), lr.png and, when the run evaluated, accuracy.png (top-1 / top-5 per epoch).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.errors import UserInputError, make_folder, report_user_errors  # noqa: E402

TRAINING_KEYS, EVALUATION_KEYS = ("step", "loss"), ("epoch", "top1", "top5")  # the numbers the curves draw


def _is_record(record, keys):
    return isinstance(record, dict) and all(
        isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool) for key in keys)


def read_metrics(run_dir):
    """(train records, eval records) of RUN_DIR/metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise UserInputError(f"no metrics.jsonl in {run_dir} (is it a train_url of train.py?)")
    train, evaluation = [], []
    with open(path, encoding="utf-8") as file:
        lines = [(number, line) for number, line in enumerate(file, 1) if line.strip()]
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == lines[-1][0]:  # cut short by a killed run
                break
            raise UserInputError(f"{path} line {number} is not JSON: {line.strip()[:60]}") from None
        is_evaluation = isinstance(record, dict) and "top1" in record
        if not _is_record(record, EVALUATION_KEYS if is_evaluation else TRAINING_KEYS):
            raise UserInputError(f"{path} line {number} is not a record of train.py: {line.strip()[:60]}")
        (evaluation if is_evaluation else train).append(record)
    if not train:
        raise UserInputError(f"{path} has no training records yet")
    return train, evaluation


def _figure(title, xlabel, ylabel):
    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(run_dir, out_dir=None):
    """Write the PNGs; returns their paths."""
    train, evaluation = read_metrics(run_dir)
    out_dir = out_dir or run_dir
    make_folder(out_dir, "for the curves")
    steps = [record["step"] for record in train]
    written = []

    figure, axes = _figure("training loss", "step", "loss")
    axes.plot(steps, [record["loss"] for record in train], label="loss")
    scales = [record.get("loss_scale") for record in train]
    if len(set(scales)) > 1:
        scale_axes = axes.twinx()
        scale_axes.step(steps, scales, where="post", color="tab:gray", alpha=0.6, label="loss scale")
        scale_axes.set_yscale("log", base=2)
        scale_axes.set_ylabel("loss scale")
    written.append(_save(figure, os.path.join(out_dir, "loss.png")))

    if any(record.get("lr") is not None for record in train):
        figure, axes = _figure("learning rate", "step", "lr")
        axes.plot(steps, [record.get("lr") for record in train])
        written.append(_save(figure, os.path.join(out_dir, "lr.png")))

    if evaluation:
        figure, axes = _figure("evaluation accuracy", "epoch", "accuracy")
        epochs = [record["epoch"] for record in evaluation]
        for key in ("top1", "top5"):
            axes.plot(epochs, [record[key] for record in evaluation], marker="o", label=key)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend()
        written.append(_save(figure, os.path.join(out_dir, "accuracy.png")))
    return written


@report_user_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="train_url of a train.py run (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: RUN_DIR)")
    args = parser.parse_args(argv)
    for path in plot_curves(args.run_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
