"""Does MAE pretraining give a better start than random weights? One run through train.py / eval.py:

    python scripts/pretrain_transfer.py DATA_DIR OUT_DIR     (scripts/run_pretrain_transfer.sh wraps it)

DATA_DIR holds train/<class>/* and val/<class>/* images (any size, grey or colour, JPEG or PNG).
1. MAE pretraining of a small ViT on every train image, labels ignored (mae_transfer_pretrain_cpu.yaml);
2. fine-tuning from the MAE checkpoint on LABELS_PER_CLASS labeled train images per class (a file list
   drawn with a fixed seed, OUT_DIR/labeled.txt) and evaluation on all of val/ (mae_transfer_finetune_cpu.yaml);
3. the same ViT from random initialisation, the same recipe, images and optimizer steps;
4. linear probing (mae_transfer_linprobe_cpu.yaml) of the frozen MAE encoder and of the frozen random one.

Pretraining runs for PRETRAIN_STEPS optimizer steps (default 1860: 60 epochs of 4000 images at batch 128)
whatever the folder's size, so a small set is seen for more epochs rather than pretrained less.

Environment: LABELS_PER_CLASS (100), PRETRAIN_STEPS (1860) or PRETRAIN_EPOCHS (wins when set),
FINETUNE_EPOCHS, LINPROBE_EPOCHS (the configs'), SEED (0), BATCH_SIZE (the configs'). Prints a table, writes
OUT_DIR/finetune_curves.png, and ends with one JSON line: {"scratch", "mae", "scratch_linprobe",
"mae_linprobe": top-1 as fractions, "minutes"}.
"""
import glob
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "src", "configs")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
PRETRAIN_STEPS = 1860
ARMS = (("mae", "finetune", True), ("scratch", "finetune", False),
        ("mae_linprobe", "linprobe", True), ("scratch_linprobe", "linprobe", False))


class DataError(Exception):
    pass


def images_of(folder):
    return sorted(name for name in os.listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS))


def check_data(data_dir, labels_per_class):
    """{class: sorted train image names}; the folder problems a run would meet, found before any training."""
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(data_dir, split)):
            raise DataError(f"{data_dir} has no {split}/ folder (expected {split}/<class>/<image>)")
    train = {entry.name: images_of(entry.path) for entry in os.scandir(os.path.join(data_dir, "train"))
             if entry.is_dir()}
    val = {entry.name for entry in os.scandir(os.path.join(data_dir, "val")) if entry.is_dir()}
    if not train:
        raise DataError(f"{data_dir}/train has no class folders")
    unknown = sorted(val - set(train))
    if unknown:
        raise DataError(f"val/ has classes that train/ lacks: {', '.join(unknown)}")
    short = sorted(name for name, files in train.items() if len(files) < labels_per_class)
    if short:
        raise DataError(f"class {short[0]} has {len(train[short[0]])} train images, fewer than LABELS_PER_CLASS="
                        f"{labels_per_class}" + (f" ({len(short) - 1} more such classes)" if len(short) > 1 else ""))
    return train


def write_labeled_list(train, labels_per_class, seed, path):
    """LABELS_PER_CLASS images per class, drawn with `seed`, as paths relative to DATA_DIR."""
    rng = np.random.default_rng(seed)
    lines = [f"train/{name}/{files[index]}" for name, files in sorted(train.items())
             for index in sorted(rng.choice(len(files), labels_per_class, replace=False))]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def run(script, *args, log):
    """Run an entry script; its output goes to `log`; the last line of its stdout is returned."""
    command = [sys.executable, os.path.join(ROOT, script), *[str(arg) for arg in args]]
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=out, text=True)
        out.write(result.stdout)
    if result.returncode != 0:
        with open(log, encoding="utf-8") as f:
            errors = [line for line in f.read().splitlines() if line.startswith("error:")]
        detail = f": {errors[-1]}" if errors else ""
        raise DataError(f"{script} failed (exit {result.returncode}), see {log}{detail}")
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def latest_checkpoint(train_url):
    found = glob.glob(os.path.join(train_url, "ckpt_0000", "*.ckpt"))
    if not found:
        raise DataError(f"no checkpoint in {train_url}/ckpt_0000")
    return max(found, key=os.path.getmtime)


def accuracy_curve(train_url):
    """[(epoch, top-1)] from the run's metrics.jsonl."""
    with open(os.path.join(train_url, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [(record["epoch"], record["top1"]) for record in records if "top1" in record]


def plot_curves(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for arm, curve in curves.items():
        axis.plot([epoch for epoch, _ in curve], [top1 for _, top1 in curve], label=arm)
    axis.set_xlabel("epoch")
    axis.set_ylabel("val top-1")
    axis.set_title("fine-tuning and linear probing: MAE-pretrained vs random initialisation")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def environment_count(name, default, least=1):
    """The whole number in the environment variable `name`, `default` where it is unset or empty."""
    text = os.environ.get(name, "")
    if not text:
        return default
    if not text.strip().isdigit() or int(text) < least:
        raise DataError(f"{name} must be a whole number >= {least}, got {text!r}")
    return int(text)


def main(data_dir, out_dir):
    start = time.time()
    labels_per_class = environment_count("LABELS_PER_CLASS", 100)
    seed = environment_count("SEED", 0, least=0)
    batch_size = environment_count("BATCH_SIZE", None)
    pretrain_steps = environment_count("PRETRAIN_STEPS", PRETRAIN_STEPS)
    epochs_given = {name: environment_count(name, None)
                    for name in ("PRETRAIN_EPOCHS", "FINETUNE_EPOCHS", "LINPROBE_EPOCHS")}
    train = check_data(data_dir, labels_per_class)
    os.makedirs(out_dir, exist_ok=True)
    labeled = os.path.join(out_dir, "labeled.txt")
    write_labeled_list(train, labels_per_class, seed, labeled)

    def overrides(config, epochs_variable, default_epochs=None):
        """Seed, epochs and batch from the environment; about eight evaluations per run, for the curves."""
        with open(config, encoding="utf-8") as f:
            recipe = yaml.safe_load(f)
        epochs = epochs_given[epochs_variable] or default_epochs or recipe["epochs"]
        extra = ["--seed", seed, "--epochs", epochs, "--eval_interval", max(1, epochs // 8)]
        if batch_size:
            extra += ["--batch_size", batch_size]
        return extra

    def pretrain_epochs(config, images):
        """Epochs that make PRETRAIN_STEPS optimizer steps over `images` (the last partial batch dropped)."""
        with open(config, encoding="utf-8") as f:
            batch = batch_size or yaml.safe_load(f)["batch_size"]
        steps_per_epoch = max(1, images // batch)
        return math.ceil(pretrain_steps / steps_per_epoch)

    pretrain_url = os.path.join(out_dir, "mae_pretrain")
    images = sum(len(files) for files in train.values())
    config = os.path.join(CONFIGS, "mae_transfer_pretrain_cpu.yaml")
    extra = overrides(config, "PRETRAIN_EPOCHS", pretrain_epochs(config, images))
    print(f"MAE pretraining on {images} images of {data_dir}/train, {extra[3]} epochs ...", flush=True)
    run("train.py", "--config", config, "--data_url", os.path.join(data_dir, "train"), "--train_url", pretrain_url,
        *extra, log=os.path.join(out_dir, "mae_pretrain.log"))
    mae_checkpoint = latest_checkpoint(pretrain_url)

    results, curves = {}, {}
    for arm, recipe, pretrained in ARMS:
        train_url = os.path.join(out_dir, arm)
        config = os.path.join(CONFIGS, f"mae_transfer_{recipe}_cpu.yaml")
        common = ["--config", config, "--data_url", data_dir, "--num_classes", len(train)]
        print(f"{arm}: {recipe} {'from the MAE checkpoint' if pretrained else 'from random weights'} on "
              f"{labels_per_class} images per class ...", flush=True)
        run("train.py", *common, "--file_list", labeled, "--train_url", train_url,
            *(["--pretrained", mae_checkpoint] if pretrained else []),
            *overrides(config, "FINETUNE_EPOCHS" if recipe == "finetune" else "LINPROBE_EPOCHS"),
            log=os.path.join(out_dir, f"{arm}.log"))
        final = json.loads(run("eval.py", *common, "--pretrained", latest_checkpoint(train_url),
                               log=os.path.join(out_dir, f"{arm}_eval.log")))
        results[arm] = final["top1"]
        curves[arm] = accuracy_curve(train_url)

    plot_curves(curves, os.path.join(out_dir, "finetune_curves.png"))
    print(f"\n{'arm':<18} {'val top-1':>9}   ({labels_per_class} labeled images per class, {len(train)} classes)")
    for arm, _, _ in ARMS:
        print(f"{arm:<18} {results[arm]:>9.4f}")
    print(f"MAE fine-tuning - scratch: {results['mae'] - results['scratch']:+.4f}; MAE linear probe - random "
          f"encoder's: {results['mae_linprobe'] - results['scratch_linprobe']:+.4f}")
    summary = {arm: round(results[arm], 4) for arm in ("scratch", "mae", "scratch_linprobe", "mae_linprobe")}
    print(json.dumps({**summary, "minutes": round((time.time() - start) / 60, 1)}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/pretrain_transfer.py DATA_DIR OUT_DIR")
    try:
        main(*sys.argv[1:])
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
