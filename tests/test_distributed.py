"""scripts/run_distribute_train.sh: two msrun workers on the CPU against one process over the same global
batch, a worker that dies, resuming afterwards, and the Ascend rank-table branch (with a stand-in python)."""
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import ROOT, TINY_CONFIG, run_script

from src.weights.checkpoint import load_checkpoint

# deterministic inputs (no crop offsets, no flips) so that a step sees the same images however they are
# split over devices; deterministic kernels, whose sums do not depend on how busy the machine is; a small lr
# keeps the tiny model's trajectory smooth enough to compare after 8 steps
SAME_BATCHES = ["--crop_ratio", "1", "--hflip", "0", "--eval_interval", "2", "--log_interval", "1",
                "--deterministic", "True", "--base_lr", "0.01", "--warmup_lr", "0.001"]
STEPS = 128 // 32


def script(name, *args, env=None, **kwargs):
    full_env = dict(os.environ, GLOG_v="3", PYTHONUNBUFFERED="1", MASTER_PORT=str(8200 + os.getpid() % 500),
                    CLUSTER_TIME_OUT="120", **(env or {}))
    return subprocess.Popen(["bash", os.path.join(ROOT, "scripts", name), *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def checkpoint_arrays(path):
    return {name: value.asnumpy() for name, value in load_checkpoint(path).items()}


@pytest.mark.parametrize("name, args, message", [
    ("run_distribute_train.sh", [], "expected at least 3 arguments, got 0"),
    ("run_distribute_train.sh", ["two", TINY_CONFIG, "."], "DEVICE_NUM must be a positive integer, got 'two'"),
    ("run_distribute_train.sh", ["2", "missing.yaml", "."], "config file not found: missing.yaml"),
    ("run_standalone_train.sh", [TINY_CONFIG, "/no/data"], "data path not found: /no/data"),
    ("run_eval.sh", [TINY_CONFIG, "."], "expected at least 3 arguments, got 2"),
    ("run_eval.sh", [TINY_CONFIG, ".", "none.ckpt"], "checkpoint not found: none.ckpt"),
])
def test_argument_errors_print_the_usage_line(name, args, message):
    code, _, stderr = finish(script(name, *args))
    lines = stderr.splitlines()
    assert code == 1 and len(lines) == 2, stderr
    assert lines[0].startswith(f"usage: bash {os.path.join(ROOT, 'scripts', name)} ")
    assert "CONFIG_PATH DATA_PATH" in lines[0]
    assert lines[1] == f"error: {message}"


@pytest.fixture(scope="module")
def single_process(small_digits, tmp_path_factory):
    """(train_url, log) of one process over the global batch of 32, two epochs."""
    train_url = tmp_path_factory.mktemp("single")
    code, log, stderr = finish(script("run_standalone_train.sh", TINY_CONFIG, small_digits, str(train_url),
                                      "--batch_size", "32", "--epochs", "2", *SAME_BATCHES))
    assert code == 0, log + stderr
    assert (train_url / "log" / "train.log").read_text() == log
    return train_url, log


def assert_two_workers_equal_one_process(train_url, single_process):
    """Both ranks end identical; their weights and momentum, and the mean of their per-step losses, equal one
    process's.

    Two workers sum a batch's gradients in another order than one process does (the all-reduce adds the two
    halves), so the results agree to rounding, not bit for bit, and GroupNorm over the digits' flat
    backgrounds amplifies such differences from step to step. Measured on an AMD EPYC (AVX2): the root
    convolution's momentum within 0.13% of its largest value after 4 steps and 6.7% after 8, its weights
    within 0.004%. So momentum is compared after the first epoch, weights after both, each within 1% of its
    largest value (and 1e-6); a wrong reduction (a sum, a missing or repeated half) is off by tens of percent."""
    single_url, single_log = single_process
    logs = {rank: (train_url / "log" / f"worker_{rank}.log").read_text() for rank in (0, 1)}
    for rank, log in logs.items():
        assert f"[rank {rank}] training finished at epoch 2" in log
    for epoch in (1, 2):
        name = f"-{epoch}_{STEPS}.ckpt"
        rank0 = checkpoint_arrays(train_url / "ckpt_0000" / f"bit_m_r50x1_0000{name}")
        rank1 = checkpoint_arrays(train_url / "ckpt_0001" / f"bit_m_r50x1_0001{name}")
        alone = checkpoint_arrays(single_url / "ckpt_0000" / f"bit_m_r50x1_0000{name}")
        assert rank0.keys() == rank1.keys() == alone.keys()
        for key in rank0:
            np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
            if epoch == 1 or not key.startswith("moments."):
                tolerance = 1e-2 * np.abs(alone[key]).max() + 1e-6  # (+: for the biases near their zero start)
                np.testing.assert_allclose(rank0[key], alone[key], rtol=0, atol=tolerance, err_msg=f"{epoch=}: {key}")
        if epoch == 1:
            first_epoch = rank0
    assert any(np.abs(rank0[key] - first_epoch[key]).max() > 1e-3 for key in rank0 if key.endswith("weight"))
    losses = {rank: [float(v) for v in re.findall(rf"^\[rank {rank}\] epoch: \d step: \d, loss is ([0-9.]+)$",
                                                   log, re.M)] for rank, log in logs.items()}
    single_losses = [float(v) for v in re.findall(r"^epoch: \d step: \d, loss is ([0-9.]+)$", single_log, re.M)]
    assert len(single_losses) == len(losses[0]) == 2 * STEPS
    np.testing.assert_allclose((np.array(losses[0]) + np.array(losses[1])) / 2, single_losses, atol=1e-5)


@pytest.mark.parametrize("batch", [["--batch_size", "16"], ["--batch_size", "4", "--accum_steps", "4"]],
                         ids=["batch16", "batch4_accum4"])
def test_two_workers_end_identical_and_equal_to_one_process_over_the_global_batch(small_digits, single_process,
                                                                                  batch, tmp_path):
    code, stdout, stderr = finish(script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits,
                                         str(tmp_path / "dp"), *batch, "--epochs", "2", "--save_all_ranks", "True",
                                         *SAME_BATCHES))
    assert code == 0, stdout + stderr
    for rank in (0, 1):
        log = (tmp_path / "dp" / "log" / f"worker_{rank}.log").read_text()
        assert (f"[rank {rank}] training bit_m_r50x1 on CIFAR10: {STEPS} steps per epoch, effective batch 32 "
                f"(batch_size {batch[1]} x 2 device(s) x accum_steps {batch[3] if len(batch) > 2 else 1})") in log
    assert_two_workers_equal_one_process(tmp_path / "dp", single_process)
    # each rank evaluated its share of the 63 test digits (32 and 31); combined, they are one process's numbers
    checkpoint = tmp_path / "dp" / "ckpt_0000" / f"bit_m_r50x1_0000-2_{STEPS}.ckpt"
    alone = run_script("eval.py", "--config", TINY_CONFIG, "--data_url", small_digits, "--pretrained",
                       str(checkpoint), "--batch_size", "16", "--crop_ratio", "1")
    assert alone.returncode == 0, alone.stderr
    alone = json.loads(alone.stdout.splitlines()[-1])
    with open(tmp_path / "dp" / "metrics.jsonl", encoding="utf-8") as lines:
        evaluated = [record for record in map(json.loads, lines) if "top1" in record]
    assert [record["epoch"] for record in evaluated] == [2] and alone["num_samples"] == 63
    assert {key: evaluated[0][key] for key in ("top1", "top5", "num_samples")} == \
        {key: alone[key] for key in ("top1", "top5", "num_samples")}
    assert evaluated[0]["eval_loss"] == pytest.approx(alone["loss"], rel=1e-6)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_a_dying_worker_fails_the_job_naming_its_rank_and_the_run_resumes(small_digits, tmp_path):
    train_url = tmp_path / "dp"
    args = ["--batch_size", "16", "--eval_interval", "0", "--log_interval", "1"]
    job = script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(train_url), "--epochs", "6", *args)
    first = train_url / "ckpt_0000" / f"bit_m_r50x1_0000-1_{STEPS}.ckpt"
    wait_for(lambda: first.exists() or job.poll() is not None, 300, "the first checkpoint")
    worker_log = (train_url / "log" / "worker_1.log").read_text()
    pid = int(re.search(r"^\[rank 1\] process (\d+) on ", worker_log, re.M).group(1))
    os.kill(pid, signal.SIGKILL)
    code, stdout, stderr = finish(job)
    assert code != 0
    assert (f"error: rank 1 (process {pid}) was killed by SIGKILL, and msrun stopped the other ranks; "
            f"see {train_url / 'log' / 'worker_1.log'}") in stderr.splitlines(), stderr
    assert "training finished" not in stdout

    assert not (train_url / "ckpt_0001").exists()  # without save_all_ranks only rank 0 writes
    latest = sorted(os.listdir(train_url / "ckpt_0000"), key=lambda name: int(name.split("-")[1].split("_")[0]))[-1]
    epoch = int(latest.split("-")[1].split("_")[0])
    assert 1 <= epoch < 6
    resumed = script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(train_url), "--epochs",
                     str(epoch + 1), "--resume", str(train_url / "ckpt_0000" / latest), *args)
    code, stdout, stderr = finish(resumed)
    assert code == 0, stdout + stderr
    for rank in (0, 1):
        log = (train_url / "log" / f"worker_{rank}.log").read_text()
        assert f"[rank {rank}] resumed from {train_url / 'ckpt_0000' / latest} at epoch {epoch}" in log
        assert re.search(rf"^\[rank {rank}\] epoch: {epoch + 1} step: {STEPS}, loss is ", log, re.M)
        assert not re.search(rf"^\[rank {rank}\] epoch: {epoch} step: ", log, re.M)
    resumed_checkpoint = load_checkpoint(str(train_url / "ckpt_0000" / f"bit_m_r50x1_0000-{epoch + 1}_{STEPS}.ckpt"))
    assert int(resumed_checkpoint["global_step"].asnumpy().reshape(-1)[0]) == (epoch + 1) * STEPS


def test_the_rank_table_launch_starts_one_process_per_device_and_names_a_failed_rank(tmp_path, small_digits):
    """On Ascend with RANK_TABLE_FILE, python is started once per device with DEVICE_ID / RANK_ID; a stand-in
    python records them and fails on rank 2."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/bash\necho "DEVICE_ID=$DEVICE_ID RANK_ID=$RANK_ID RANK_SIZE=$RANK_SIZE $*"\n'
                           '[ "$RANK_ID" != 2 ] || exit 3\n')
    fake_python.chmod(0o755)
    rank_table = tmp_path / "rank_table_8p.json"
    rank_table.write_text("{}")
    train_url = tmp_path / "out"
    code, stdout, stderr = finish(script(
        "run_distribute_train.sh", "4", TINY_CONFIG, small_digits, str(train_url), "--epochs", "3",
        env={"PYTHON": str(fake_python), "RANK_TABLE_FILE": str(rank_table), "DEVICE_START": "4", "RANK_SIZE": "8",
             "RANK_START": "0"}))
    assert code == 1
    assert stderr.splitlines() == [f"error: rank 2 exited with status 3; see {train_url / 'log' / 'rank_2.log'}"]
    for rank in range(4):
        line = (train_url / "log" / f"rank_{rank}.log").read_text().strip()
        assert line.startswith(f"DEVICE_ID={4 + rank} RANK_ID={rank} RANK_SIZE=8 train.py --config {TINY_CONFIG} ")
        assert line.endswith("--epochs 3 --device_target Ascend --device_num 8")


def test_sigterm_stops_both_workers_at_one_step_and_resume_auto_ends_as_an_uninterrupted_run(small_digits,
                                                                                             tmp_path):
    args = ["--batch_size", "16", "--epochs", "6", "--resume", "auto", *SAME_BATCHES]
    whole = script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(tmp_path / "whole"), *args)
    code, stdout, stderr = finish(whole)
    assert code == 0, stdout + stderr
    train_url = tmp_path / "stopped"
    job = script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(train_url), *args)
    first = train_url / "ckpt_0000" / f"bit_m_r50x1_0000-1_{STEPS}.ckpt"
    wait_for(lambda: first.exists() or job.poll() is not None, 300, "the first checkpoint")
    job.send_signal(signal.SIGTERM)  # to the script, which passes it to the workers
    code, stdout, stderr = finish(job)
    assert code == 128 + signal.SIGTERM, stdout + stderr
    line = stderr.strip().splitlines()[-1]
    epoch, step = map(int, re.match(r"interrupted by SIGTERM at epoch (\d+) step (\d+); saved \S+; continue with "
                                    r"--resume auto$", line).groups())
    assert (epoch, step) < (6, STEPS)
    for rank in (0, 1):  # both ranks stopped after the same step
        assert f"[rank {rank}] {line}" in (train_url / "log" / f"worker_{rank}.log").read_text()
    code, stdout, stderr = finish(script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(train_url),
                                         *args))
    assert code == 0, stdout + stderr
    assert f"resume auto: from {train_url / 'ckpt_0000' / f'bit_m_r50x1_0000-{epoch}_{step}.ckpt'}" in \
        (train_url / "log" / "worker_1.log").read_text()
    name = f"bit_m_r50x1_0000-6_{STEPS}.ckpt"
    expected = checkpoint_arrays(tmp_path / "whole" / "ckpt_0000" / name)
    got = checkpoint_arrays(train_url / "ckpt_0000" / name)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_the_rank_table_launch_passes_sigterm_to_every_rank(tmp_path, small_digits):
    """Stand-in ranks that stop on SIGTERM as train.py does: the script passes the signal on, waits for them,
    and ends with rank 0's line and 128 + 15."""
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/bash\ntrap \'echo "interrupted by SIGTERM at epoch 1 step 2; saved ckpt_$RANK_ID; '
                           'continue with --resume auto"; exit 143\' TERM\necho "rank $RANK_ID up"\n'
                           'sleep 60 &\nwait\n')
    fake_python.chmod(0o755)
    rank_table = tmp_path / "rank_table_2p.json"
    rank_table.write_text("{}")
    train_url = tmp_path / "out"
    job = script("run_distribute_train.sh", "2", TINY_CONFIG, small_digits, str(train_url), "--epochs", "3",
                 env={"PYTHON": str(fake_python), "RANK_TABLE_FILE": str(rank_table)})
    logs = [train_url / "log" / f"rank_{rank}.log" for rank in (0, 1)]
    wait_for(lambda: all(log.exists() and "up" in log.read_text() for log in logs), 60, "both ranks")
    job.send_signal(signal.SIGTERM)
    code, _, stderr = finish(job, timeout=60)
    assert code == 128 + signal.SIGTERM
    assert stderr.splitlines() == [
        "interrupted by SIGTERM at epoch 1 step 2; saved ckpt_0; continue with --resume auto"]
    assert all("interrupted by SIGTERM" in log.read_text() for log in logs)  # every rank got it
