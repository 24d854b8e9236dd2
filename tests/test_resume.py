"""Exact resume: the random state a checkpoint carries, and a run SIGKILLed mid-epoch that, resumed,
ends with the weights of an uninterrupted run."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT, assert_one_line_error
from mindspore.train.callback import RunContext
from sample_photos import write_photo_imagenet

from src.engine.callbacks import MetricsFile, StepLogger
from src.engine.loop import CallbackParams
from src.engine.resume import newest_checkpoint, resume_state
from src.errors import UserInputError
from src.models import create_model
from src.models.layers import DropPath, ResumableUniform
from src.weights.checkpoint import load_checkpoint, save_checkpoint
from src.weights.loading import load_weights

BEIT_TINY = os.path.join(ROOT, "src", "configs", "beit_tiny_imagenet_cpu.yaml")


def test_noise_is_uniform_and_each_stream_its_own():
    first, second = ResumableUniform(stream=1), ResumableUniform(stream=2)
    draws = np.concatenate([first((100, 50)).asnumpy().ravel() for _ in range(4)])
    assert draws.min() >= 0 and draws.max() < 1
    # Kolmogorov-Smirnov distance to U(0, 1) over 20000 draws: 1.63 / sqrt(n) is the 1% level
    ordered = np.sort(draws)
    ks = np.abs(ordered - np.arange(1, len(ordered) + 1) / len(ordered)).max()
    assert ks < 1.63 / np.sqrt(len(ordered))
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03  # neighbouring elements independent
    again = first((100, 50)).asnumpy()
    other = second((100, 50)).asnumpy()
    assert not np.array_equal(again, draws[:5000].reshape(100, 50))  # each call draws anew
    assert abs(np.corrcoef(again.ravel(), other.ravel())[0, 1]) < 0.05


def test_drop_path_drops_whole_samples_at_its_rate_and_rescales_the_rest():
    drop = DropPath(0.3)
    drop.set_train(True)
    x = ms.Tensor(np.ones((4000, 3, 2), np.float32))
    out = drop(x).asnumpy()
    per_sample = out.reshape(4000, -1)
    assert np.ptp(per_sample, axis=1).max() == 0  # one decision per sample
    kept = per_sample[:, 0] > 0
    assert abs(kept.mean() - 0.7) < 0.03
    np.testing.assert_allclose(per_sample[kept], 1 / 0.7, rtol=1e-6)
    drop.set_train(False)
    np.testing.assert_array_equal(drop(x).asnumpy(), x.asnumpy())


def test_masks_after_a_checkpoint_round_trip_continue_the_sequence(tmp_path):
    """MAE's masking noise lives in a parameter: a model loaded from a checkpoint draws the masks the
    saved one would have drawn next, not the first ones again."""
    images = ms.Tensor(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 16,
              "decoder_depth": 1, "decoder_num_heads": 2}
    model = create_model("mae_vit_base_patch16", **kwargs)
    first_mask = model(images)[2].asnumpy()
    save_checkpoint(model, str(tmp_path / "mae.ckpt"))
    expected = model(images)[2].asnumpy()
    resumed = create_model("mae_vit_base_patch16", **kwargs)
    load_weights(resumed, load_checkpoint(str(tmp_path / "mae.ckpt")), "mae.ckpt")
    np.testing.assert_array_equal(resumed(images)[2].asnumpy(), expected)
    assert not np.array_equal(expected, first_mask)


def _train_command(data, train_url, *extra):
    # drop path, RandAugment, random erasing, mixup / cutmix, EMA and a dynamic loss scale: all of the
    # training's randomness and state
    return [sys.executable, "train.py", "--config", BEIT_TINY, "--data_url", data, "--train_url", train_url,
            "--mix_up", "0.8", "--cutmix", "1.0", "--enable_ema", "True", "--ema_decay", "0.9",
            "--deterministic", "True", "--save_checkpoint_steps", "3", "--log_interval", "1", *extra]


def _loss_records(train_url):
    with open(os.path.join(train_url, "metrics.jsonl"), encoding="utf-8") as lines:
        return [(record["step"], record["loss"]) for record in map(json.loads, lines) if "loss" in record]


def _last_logged_step(metrics):
    """The last step with a complete record in a metrics.jsonl being written, 0 before the first."""
    try:
        with open(metrics, encoding="utf-8") as lines:
            text = lines.read()
    except FileNotFoundError:
        return 0
    complete = text[:text.rfind("\n") + 1].splitlines()
    return json.loads(complete[-1])["step"] if complete else 0


FINAL_NAME = "beit_base_patch16_224_0000-3_4.ckpt"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(data folder, train_url) of a whole run: 3 epochs of 4 steps of 4 photos."""
    root = tmp_path_factory.mktemp("resume")
    data, whole = str(root / "imagenet"), str(root / "whole")
    write_photo_imagenet(data, num_classes=3, train_per_class=6, val_per_class=2)
    result = subprocess.run(_train_command(data, whole), cwd=ROOT, env=dict(os.environ, GLOG_v="3"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return data, whole


def assert_same_end(got_url, expected_url):
    """The same final checkpoint (every parameter bit-identical) and the same loss records."""
    expected = load_checkpoint(os.path.join(expected_url, "ckpt_0000", FINAL_NAME))
    got = load_checkpoint(os.path.join(got_url, "ckpt_0000", FINAL_NAME))
    assert set(got) == set(expected)
    assert any(name.endswith("noise_calls") for name in got) and any(name.startswith("ema.") for name in got)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name].asnumpy(), value.asnumpy(), err_msg=name)
    assert _loss_records(got_url) == _loss_records(expected_url)


def test_a_run_killed_mid_epoch_and_resumed_ends_as_an_uninterrupted_one(uninterrupted, tmp_path):
    data, whole = uninterrupted
    env = dict(os.environ, GLOG_v="3")
    killed = str(tmp_path / "killed")
    victim = subprocess.Popen(_train_command(data, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    mid_epoch = os.path.join(killed, "ckpt_0000", "beit_base_patch16_224_0000-2_2.ckpt")  # global step 6 of 12
    deadline = time.time() + 600
    while not os.path.exists(mid_epoch) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL and os.path.exists(mid_epoch)
    assert not os.path.exists(os.path.join(killed, "ckpt_0000", FINAL_NAME))  # it did not get to the end

    resumed = subprocess.run(_train_command(data, killed, "--resume", mid_epoch), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {mid_epoch} in epoch 2 after step 2 (global step 6)" in resumed.stdout
    assert "epoch: 2 step: 1," not in resumed.stdout and "epoch: 2 step: 3," in resumed.stdout
    # the metrics file reads as one run: the killed run's records after step 6 are replaced
    assert_same_end(killed, whole)


def test_sigterm_mid_epoch_saves_and_resume_auto_ends_as_an_uninterrupted_run(uninterrupted, tmp_path):
    data, whole = uninterrupted
    env = dict(os.environ, GLOG_v="3", PYTHONUNBUFFERED="1")
    stopped = str(tmp_path / "stopped")
    command = _train_command(data, stopped, "--resume", "auto", "--save_checkpoint_steps", "0")
    victim = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    metrics = os.path.join(stopped, "metrics.jsonl")
    deadline = time.time() + 600
    while victim.poll() is None and time.time() < deadline and _last_logged_step(metrics) < 5:
        time.sleep(0.01)
    victim.send_signal(signal.SIGTERM)  # in epoch 2
    stdout, stderr = victim.communicate(timeout=600)
    assert victim.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "resume auto: no checkpoint in" in stdout and "starting fresh" in stdout
    line = [line for line in stdout.splitlines() if line.startswith("interrupted by SIGTERM")]
    assert len(line) == 1, stdout
    epoch, step, path = re.match(r"interrupted by SIGTERM at epoch (\d+) step (\d+); saved (\S+); continue with "
                                 r"--resume auto$", line[0]).groups()
    assert (int(epoch), int(step)) < (3, 4)
    assert os.path.basename(path) == f"beit_base_patch16_224_0000-{epoch}_{step}.ckpt"
    assert os.path.exists(path) and not os.path.exists(os.path.join(stopped, "ckpt_0000", FINAL_NAME))

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resume auto: from {path}" in resumed.stdout
    assert_same_end(stopped, whole)
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "nothing to do: the checkpoint is at epoch 3 of 3" in again.stdout


def test_resume_auto_passes_over_temporary_and_unreadable_files(uninterrupted, tmp_path):
    _, whole = uninterrupted
    folder = tmp_path / "run" / "ckpt_0000"
    folder.mkdir(parents=True)
    for name in os.listdir(os.path.join(whole, "ckpt_0000")):
        shutil.copy(os.path.join(whole, "ckpt_0000", name), folder / name)
    (folder / ".tmp-abc.tmp").write_bytes(b"half a checkpoint")
    (folder / "beit_base_patch16_224_0000-3_9.ckpt").write_bytes(b"not a checkpoint")  # newer by name, unreadable
    warnings = []
    path, checkpoint = newest_checkpoint(str(tmp_path / "run"), log=warnings.append)
    assert path == str(folder / FINAL_NAME) and "step_num" in checkpoint
    assert len(warnings) == 2 and all(warning.startswith("warning: resume auto: passing over") for warning in warnings)
    assert newest_checkpoint(str(tmp_path / "empty"), log=warnings.append) == (None, None)




def test_a_checkpoint_resumes_only_at_the_steps_per_epoch_it_was_trained_with(uninterrupted, tmp_path):
    """The whole run has 4 steps an epoch; its last checkpoint is the end of epoch 3 (global step 12), a mid-epoch
    one is step 2 of epoch 2 (global step 6). Another batch size puts those steps in other epochs: refused."""
    assert resume_state({"epoch_num": ms.Tensor(3), "step_num": ms.Tensor(12)}, 4) == (12, (0.0, 0))
    assert resume_state({"epoch_num": ms.Tensor(2), "step_num": ms.Tensor(6)}, 4)[0] == 6
    assert resume_state({"epoch_num": ms.Tensor(3)}, 5)[0] == 15  # no step saved: the end of its epoch
    for steps_per_epoch, epoch in ((2, 6), (8, 2), (12, 1)):
        with pytest.raises(UserInputError, match=f"saved in epoch 3 at global step 12, which at this run's "
                                                 f"{steps_per_epoch} steps per epoch is in epoch {epoch}: resume"):
            resume_state({"epoch_num": ms.Tensor(3), "step_num": ms.Tensor(12)}, steps_per_epoch, "x.ckpt")
    data, whole = uninterrupted
    final = os.path.join(whole, "ckpt_0000", FINAL_NAME)
    result = subprocess.run(_train_command(data, str(tmp_path / "run"), "--resume", final, "--batch_size", "2"),
                            cwd=ROOT, env=dict(os.environ, GLOG_v="3"), capture_output=True, text=True, timeout=600)
    assert_one_line_error(result, f"{final} was saved in epoch 3 at global step 12, which at this run's 9 steps per "
                                  "epoch is in epoch 2")


def test_a_resumed_metrics_file_keeps_the_records_up_to_its_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "step": 5, "loss": 2.0, "overflow_count": 3}\n{"epoch": 1, "step": 6, "top1": 0.5}\n'
                    '{"epoch": 2, "step": 9, "loss": 1.0, "overflow_count": 4}\n{"epoch": 2, "st', encoding="utf-8")
    resumed = MetricsFile(str(path), start_step=6)
    assert [json.loads(line)["step"] for line in path.read_text(encoding="utf-8").splitlines()] == [5, 6]
    assert resumed.last_train_record["overflow_count"] == 3  # the count continues from there
    MetricsFile(str(path))
    assert path.read_text(encoding="utf-8") == ""  # a fresh run starts anew


def test_metrics_records_count_overflow_steps_and_carry_the_loss_scale(tmp_path):
    """Train steps return (loss, overflow, loss scale): the records count skipped steps across epochs and
    continue the count of the run they resume."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "step": 2, "loss": 2.0, "overflow_count": 5}\n', encoding="utf-8")
    logger = StepLogger(steps_per_epoch=2, log_interval=1, log=lambda message: None,
                        metrics=MetricsFile(str(path), start_step=2), images_per_step=4, lr_now=lambda: 0.1)
    params = CallbackParams(cur_epoch_num=2, cur_step_num=2, net_outputs=None, steps_in_call=1)
    context = RunContext(params)
    logger.on_train_epoch_begin(context)
    for overflow, scale in ((True, 512.0), (False, 512.0)):
        params.cur_step_num += 1
        params.net_outputs = (ms.Tensor(1.5), ms.Tensor(overflow), ms.Tensor(scale))
        logger.on_train_step_end(context)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(r["step"], r["overflow_count"], r["loss_scale"], r["lr"]) for r in records[1:]] == [
        (3, 6, 512.0, 0.1), (4, 6, 512.0, 0.1)]
    assert all(record["images_per_sec"] > 0 for record in records[1:])


FULL_DISK_AT_THE_SECOND_SAVE = """
import errno, runpy, sys
import mindspore as ms
real_save, calls = ms.save_checkpoint, []

def save_until_the_disk_is_full(save_obj, path, **kwargs):
    calls.append(path)
    if len(calls) == 1:
        return real_save(save_obj, path, **kwargs)
    with open(path[:-len(".ckpt")] + ".tmp", "wb") as partial:  # where MindSpore writes before renaming
        partial.write(bytes(1000))
    raise OSError(errno.ENOSPC, "No space left on device")

ms.save_checkpoint = save_until_the_disk_is_full
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def test_a_full_disk_at_a_checkpoint_is_one_error_line_and_leaves_the_older_ones(small_digits, tmp_path):
    """The second checkpoint's write fails as on a full disk (after MindSpore has written part of its
    temporary file): one error line naming the file, no temporary file left, the first checkpoint loadable."""
    from conftest import TINY_CONFIG, assert_one_line_error, run_script

    result = run_script("-c", FULL_DISK_AT_THE_SECOND_SAVE, "train.py", "--config", TINY_CONFIG, "--data_url",
                        small_digits, "--train_url", str(tmp_path), "--batch_size", "16", "--epochs", "3",
                        "--eval_interval", "0")
    second = tmp_path / "ckpt_0000" / "bit_m_r50x1_0000-2_8.ckpt"
    assert_one_line_error(result, f"error: cannot write checkpoint {second}: [Errno 28] No space left on device")
    assert result.returncode == 2
    assert sorted(os.listdir(tmp_path / "ckpt_0000")) == ["bit_m_r50x1_0000-1_8.ckpt"]  # no temporary file
    assert int(load_checkpoint(str(tmp_path / "ckpt_0000" / "bit_m_r50x1_0000-1_8.ckpt"))["step_num"]
               .asnumpy().reshape(-1)[0]) == 8
