"""train.py and eval.py end to end on real data (scikit-learn's digits in the CIFAR-10 layout)."""
import glob
import json
import os
import re

import numpy as np
import pytest
from conftest import ROOT, TINY_CONFIG, assert_one_line_error, run_script
from PIL import Image

from src.args import parse_args
from src.errors import UserInputError
from src.optim.schedulers import create_lr_schedule
from src.weights.checkpoint import load_checkpoint, save_checkpoint

STEPS = 1437 // 32
COMMON = ["--config", TINY_CONFIG, "--batch_size", "32", "--warmup_length", "0.5", "--log_interval", "20"]


def train(digits_cifar, train_url, *extra):
    result = run_script("train.py", *COMMON, "--data_url", digits_cifar, "--train_url", str(train_url), *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def accuracies(log):
    return [float(acc) for acc in re.findall(r"^epoch: \d{4} acc: ([0-9.]+), best epoch: \d{4}, acc is [0-9.]+$",
                                             log, re.M)]


@pytest.fixture(scope="module")
def trained(digits_cifar, tmp_path_factory):
    train_url = tmp_path_factory.mktemp("run")
    log = train(digits_cifar, train_url, "--epochs", "3", "--enable_ema", "True", "--ema_decay", "0.9",
                "--keep_checkpoint_max", "2", "--dataset_sink_mode", "True")
    return train_url, log


def test_training_logs_in_the_seed_format_and_learns(trained):
    _, log = trained
    losses = [float(v) for v in re.findall(r"^epoch: \d+ step: \d+, loss is ([0-9.]+)$", log, re.M)]
    assert len(losses) == 3 * 3  # steps 20, 40 and the last of each epoch
    assert log.count("dataset_sink_mode: MindSpore sinks data on Ascend and GPU only; the CPU trains step by "
                     "step") == 1
    assert re.search(rf"^epoch: 3 step: {STEPS}, loss is ", log, re.M)
    assert len(re.findall(r"^epoch time: [0-9.]+ ms, per step time: [0-9.]+ ms$", log, re.M)) == 3
    assert losses[-1] < losses[0] * 0.7
    acc = accuracies(log)
    assert len(acc) == 3 and acc[-1] > 0.6 and acc[-1] > acc[0]  # chance is 0.1


def test_checkpoints_keep_the_latest_and_the_best(trained):
    train_url, log = trained
    latest = sorted(os.path.basename(p) for p in glob.glob(str(train_url / "ckpt_0000" / "*.ckpt")))
    assert latest == [f"bit_m_r50x1_0000-2_{STEPS}.ckpt", f"bit_m_r50x1_0000-3_{STEPS}.ckpt"]
    best = glob.glob(str(train_url / "ckpt_best_0000" / "*.ckpt"))
    assert len(best) == 1
    best_epoch = int(re.findall(r"best epoch: (\d{4})", log)[-1])
    assert os.path.basename(best[0]) == f"bit_m_r50x1_0000-{best_epoch}_{STEPS}.ckpt"
    checkpoint = load_checkpoint(best[0])
    assert "ema.root.conv.weight" in checkpoint and "scale_sense" in checkpoint  # EMA and loss scale kept
    assert int(checkpoint["global_step"].asnumpy().reshape(-1)[0]) == best_epoch * STEPS
    assert not glob.glob(str(train_url / "**" / ".tmp-*"), recursive=True)


def test_eval_reproduces_the_best_accuracy_and_ends_with_json(trained, digits_cifar):
    train_url, log = trained
    best = glob.glob(str(train_url / "ckpt_best_0000" / "*.ckpt"))[0]
    result = run_script("eval.py", "--config", TINY_CONFIG, "--data_url", digits_cifar, "--pretrained", best)
    assert result.returncode == 0, result.stderr
    assert "EMA weights" in result.stdout
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"top1", "top5", "loss", "num_samples", "left_out"} and metrics["num_samples"] == 360
    assert metrics["top1"] == pytest.approx(max(accuracies(log)), abs=1e-9)
    assert metrics["top5"] >= metrics["top1"]
    batches = -(-360 // 64)  # the config's batch size
    assert re.search(rf"^evaluating: {batches}/{batches} \(100%\), elapsed \d\d:\d\d, ETA 00:00$", result.stderr,
                     re.M)  # a log's plain lines, not a terminal's bar
    raw = run_script("eval.py", "--config", TINY_CONFIG, "--data_url", digits_cifar, "--pretrained", best,
                     "--eval_use_ema", "False")
    assert "EMA" not in raw.stdout and json.loads(raw.stdout.strip().splitlines()[-1])["num_samples"] == 360


def test_metrics_file_records_the_run_and_plot_curves_draws_it(trained, tmp_path):
    train_url, log = trained
    with open(train_url / "metrics.jsonl", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    steps = [record for record in records if "loss" in record]
    evals = [record for record in records if "top1" in record]
    per_epoch = [20, 40, STEPS]
    assert [record["step"] for record in steps] == [epoch * STEPS + step for epoch in range(3) for step in per_epoch]
    assert [record["epoch"] for record in steps] == [epoch for epoch in (1, 2, 3) for _ in per_epoch]
    assert [record["loss"] for record in steps] == [float(v) for v in re.findall(r"loss is ([0-9.]+)$", log, re.M)]
    args = parse_args([*COMMON, "--epochs", "3"])
    schedule = create_lr_schedule(args, STEPS)
    assert [record["lr"] for record in steps] == pytest.approx([float(schedule[r["step"] - 1]) for r in steps])
    assert all(record["loss_scale"] == 1024.0 and record["overflow_count"] == 0 for record in steps)
    assert all(record["images_per_sec"] > 0 for record in steps)
    assert [(record["epoch"], record["step"]) for record in evals] == [(epoch, epoch * STEPS) for epoch in (1, 2, 3)]
    assert [record["top1"] for record in evals] == pytest.approx(accuracies(log), abs=1e-12)
    assert all(1 >= record["top5"] >= record["top1"] for record in evals)

    result = run_script("plot_curves.py", str(train_url), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(os.path.basename(line) for line in result.stdout.split())
    assert names == ["accuracy.png", "loss.png", "lr.png"]
    for name in names:
        with Image.open(tmp_path / name) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.shape[0] > 200 and pixels.std() > 5  # drawn, not blank
    assert_one_line_error(run_script("plot_curves.py", str(tmp_path / "nothing")), "no metrics.jsonl")
    killed = tmp_path / "killed"
    killed.mkdir()
    lines = (train_url / "metrics.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (killed / "metrics.jsonl").write_text("".join(lines) + '{"epoch": 3, "st', encoding="utf-8")
    assert run_script("plot_curves.py", str(killed)).returncode == 0  # a last line cut by a kill is skipped
    (killed / "metrics.jsonl").write_text("".join(lines[:2] + ["garbage\n"] + lines[2:]), encoding="utf-8")
    assert_one_line_error(run_script("plot_curves.py", str(killed)), "line 3 is not JSON")
    for bad in ("[1, 2]", '{"epoch": 1, "step": 5, "loss": "abc"}', '{"epoch": 1, "step": 5, "top1": null}'):
        (killed / "metrics.jsonl").write_text("".join(lines[:2] + [bad + "\n"] + lines[2:]), encoding="utf-8")
        assert_one_line_error(run_script("plot_curves.py", str(killed)), "line 3 is not a record of train.py")


def test_resume_continues_epoch_optimizer_and_best(trained, digits_cifar, tmp_path):
    train_url, log = trained
    epoch2 = str(train_url / "ckpt_0000" / f"bit_m_r50x1_0000-2_{STEPS}.ckpt")
    resumed = train(digits_cifar, tmp_path, "--epochs", "3", "--enable_ema", "True", "--ema_decay", "0.9",
                    "--resume", epoch2)
    assert f"resumed from {epoch2} at epoch 2" in resumed
    assert not re.search(r"^epoch: [12] step:", resumed, re.M) and re.search(r"^epoch: 3 step:", resumed, re.M)
    best_before = max(accuracies(log)[:2])
    assert max(accuracies(resumed) + [0]) >= best_before or f"acc is {best_before}" in resumed
    checkpoint = load_checkpoint(str(tmp_path / "ckpt_0000" / f"bit_m_r50x1_0000-3_{STEPS}.ckpt"))
    assert int(checkpoint["global_step"].asnumpy().reshape(-1)[0]) == 3 * STEPS


def test_bad_paths_and_checkpoints_are_one_line_errors(digits_cifar, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(os.urandom(4096))
    assert_one_line_error(run_script("eval.py", "--config", TINY_CONFIG, "--data_url", digits_cifar,
                                     "--pretrained", str(corrupt)), "cannot read checkpoint")
    assert_one_line_error(run_script("eval.py", "--config", TINY_CONFIG, "--data_url", digits_cifar),
                          "needs --pretrained")
    assert_one_line_error(run_script("train.py", *COMMON, "--data_url", str(tmp_path / "missing")),
                          "no CIFAR-10 binaries")
    assert_one_line_error(run_script("train.py", *COMMON, "--data_url", digits_cifar, "--resume",
                                     str(tmp_path / "none.ckpt")), "checkpoint not found")
    assert_one_line_error(run_script("train.py", *COMMON, "--data_url", digits_cifar, "--arch", "bit_m_r51x1"),
                          "unknown model 'bit_m_r51x1'")


def test_output_folders_that_cannot_be_made_are_one_line_errors(trained, tmp_path):
    # a file where a folder must go: NotADirectoryError / FileExistsError tracebacks, train.py's after the whole
    # model and data pipeline were built
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_script("train.py", *COMMON, "--data_url", str(tmp_path / "no_data"), "--train_url",
                        str(blocker / "run"))
    assert_one_line_error(result, f"cannot create the folder {blocker / 'run'} of the run (train_url): "
                                  "Not a directory")
    assert "no CIFAR-10 binaries" not in result.stderr  # refused before the data was looked at
    assert_one_line_error(run_script("plot_curves.py", str(trained[0]), "--out", str(blocker / "curves")),
                          f"cannot create the folder {blocker / 'curves'} for the curves: Not a directory")
    with pytest.raises(UserInputError, match=re.escape(f"cannot create the folder {blocker} of checkpoint "
                                                       "x.ckpt: File exists")):
        save_checkpoint({"w": np.zeros(2, np.float32)}, str(blocker / "x.ckpt"))


def test_o2_mixed_precision_trains_on_cpu(digits_cifar, tmp_path):
    log = train(digits_cifar, tmp_path, "--epochs", "1", "--amp_level", "O2", "--eval_interval", "0",
                "--log_interval", "10")
    losses = [float(v) for v in re.findall(r"loss is ([0-9.]+)$", log, re.M)]
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_readme_demo_runs_end_to_end(tmp_path):
    import subprocess

    env = dict(os.environ, DEMO_EPOCHS="1", GLOG_v="3")
    result = subprocess.run(["bash", "scripts/run_demo.sh", str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    top1 = float(re.search(r"top-1 on the held-out digits = ([0-9.]+)", result.stdout).group(1))
    assert top1 > 0.3  # one epoch of real digits is well above chance (0.1)
    assert all((tmp_path / name).stat().st_size > 0 for name in ("loss.png", "lr.png", "accuracy.png"))


@pytest.mark.parametrize("scale_kind", ["fixed", "dynamic"])
def test_the_divergence_guard_stops_a_run_that_keeps_overflowing(small_digits, tmp_path, scale_kind):
    """A fixed scale of 1e38 overflows at once; an lr of 1e30 blows the weights up after one good step, and a
    dynamic scale then halves down to 1 and keeps overflowing."""
    common = ["--config", TINY_CONFIG, "--data_url", small_digits, "--train_url", str(tmp_path), "--batch_size",
              "16", "--epochs", "4", "--eval_interval", "0", "--use_global_norm", "False"]
    if scale_kind == "fixed":
        extra = ["--is_dynamic_loss_scale", "False", "--loss_scale", "1e38"]
        expected = "with a fixed loss scale of 1e+38; no checkpoint was saved yet"
    else:
        extra = ["--is_dynamic_loss_scale", "True", "--loss_scale", "4", "--max_overflow_steps", "5",
                 "--base_lr", "1e30", "--warmup_length", "0", "--save_checkpoint_steps", "1"]
        expected = "5 consecutive steps overflowed with the loss scale at its minimum (1); the last good " \
                   f"checkpoint is {tmp_path / 'ckpt_0000'}"
    result = run_script("train.py", *common, *extra)
    assert_one_line_error(result, "training diverged at epoch 1 step", expected)
