"""train.py and eval.py end to end on real data (scikit-learn's digits in the CIFAR-10 layout)."""
import glob
import json
import os
import re

import pytest
from conftest import ROOT, TINY_CONFIG, assert_one_line_error, run_script

from src.tools.checkpoint import load_checkpoint

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
                "--keep_checkpoint_max", "2")
    return train_url, log


def test_training_logs_in_the_seed_format_and_learns(trained):
    _, log = trained
    losses = [float(v) for v in re.findall(r"^epoch: \d+ step: \d+, loss is ([0-9.]+)$", log, re.M)]
    assert len(losses) == 3 * 3  # steps 20, 40 and the last of each epoch
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
    assert set(metrics) == {"top1", "top5", "loss", "num_samples"} and metrics["num_samples"] == 360
    assert metrics["top1"] == pytest.approx(max(accuracies(log)), abs=1e-9)
    assert metrics["top5"] >= metrics["top1"]
    raw = run_script("eval.py", "--config", TINY_CONFIG, "--data_url", digits_cifar, "--pretrained", best,
                     "--eval_use_ema", "False")
    assert "EMA" not in raw.stdout and json.loads(raw.stdout.strip().splitlines()[-1])["num_samples"] == 360


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
