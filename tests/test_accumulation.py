"""Gradient accumulation: k micro-batches of b are one optimizer step of k x b; blr; the bad values named."""
import re

import mindspore as ms
import numpy as np
import pytest
from conftest import TINY_CONFIG, assert_one_line_error, run_script
from mindspore import nn

from src.args import parse_args
from src.engine.train_one_step import GradientAccumulation, create_train_step
from src.errors import UserInputError
from src.models import create_model
from src.optim.optimizer import create_optimizer
from src.optim.schedulers import create_lr_schedule, peak_learning_rate
from src.weights.checkpoint import load_checkpoint

MODELS = {
    "vit": lambda: create_model("vit_base_patch16", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                num_classes=5, drop_path_rate=0.0),
    "bit": lambda: create_model("bit_m_r50x1", layers=[1, 1, 1, 1], width_factor=0.5, num_classes=5),
}


def train_cell(model_name, optimizer, steps):
    # Adam's update m / sqrt(v) magnifies float rounding in near-zero gradients by lr / eps: lr 1e-3 for it
    lr = "0.001" if optimizer == "adamw" else "0.01"
    args = parse_args(["--optimizer", optimizer, "--base_lr", lr, "--weight_decay", "0.05", "--epochs", "1",
                       "--warmup_length", "0", "--is_dynamic_loss_scale", "True", "--loss_scale", "1024",
                       "--use_global_norm", "True", "--clip_global_norm_value", "1.0", "--enable_ema", "True",
                       "--ema_decay", "0.9"])
    network = MODELS[model_name]()
    optimizer = create_optimizer(args, network, create_lr_schedule(args, steps))
    return network, create_train_step(args, nn.WithLossCell(network, nn.CrossEntropyLoss()), optimizer)


@pytest.mark.parametrize("model_name,optimizer", [("vit", "adamw"), ("bit", "momentum")])
def test_micro_batches_equal_one_step_of_the_whole_batch(model_name, optimizer):
    ms.set_context(mode=ms.GRAPH_MODE, deterministic="ON")
    steps, accum_steps, micro = 3, 4, 2
    whole_net, whole = train_cell(model_name, optimizer, steps)
    _, micro_cell = train_cell(model_name, optimizer, steps)
    ms.load_param_into_net(micro_cell, {p.name: ms.Parameter(p.asnumpy(), p.name) for p in whole.get_parameters()})
    initial = {p.name: p.asnumpy().copy() for p in whole_net.trainable_params()}
    accumulated = GradientAccumulation(micro_cell, accum_steps)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        image_size = 16 if model_name == "vit" else 32
        images = ms.Tensor(rng.standard_normal((accum_steps * micro, 3, image_size, image_size)).astype(np.float32))
        labels = ms.Tensor(rng.integers(0, 5, accum_steps * micro).astype(np.int32))
        loss_whole, overflow, _, _ = whole(images, labels)
        loss_micro, _, _, _ = accumulated(images, labels)
        assert not bool(overflow.asnumpy())
        assert float(loss_micro.asnumpy()) == pytest.approx(float(loss_whole.asnumpy()), abs=1e-5)
    expected = {p.name: p.asnumpy() for p in whole.get_parameters()}
    got = {p.name: p.asnumpy() for p in micro_cell.get_parameters()}
    assert set(got) == set(expected) and any(name.startswith("ema.") for name in got)  # no buffers in the state
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, rtol=0, err_msg=name)
    assert [name for name, value in initial.items() if "weight" in name and np.allclose(expected[name], value)] == []


def test_blr_scales_with_the_effective_batch_and_conflicts_are_named(tmp_path):
    args = parse_args(["--blr", "1.5e-4", "--batch_size", "64", "--accum_steps", "4"])
    lr, note = peak_learning_rate(args, devices=2)
    assert lr == pytest.approx(1.5e-4 * 64 * 2 * 4 / 256)
    assert "effective batch 512 (batch_size 64 x 2 device(s) x accum_steps 4)" in note and "blr" in note
    assert parse_args(["--update_freq", "3"]).accum_steps == parse_args(["--accum_iter", "3"]).accum_steps == 3
    config = tmp_path / "c.yaml"
    config.write_text("blr: 5e-4\n")  # YAML reads this as text: taken as the number
    assert parse_args(["--config", str(config)]).blr == 5e-4
    with pytest.raises(UserInputError, match="--base_lr conflicts with blr"):
        parse_args(["--config", str(config), "--base_lr", "0.1"])
    both = tmp_path / "both.yaml"
    both.write_text("blr: 1.0e-4\nbase_lr: 0.1\n")
    with pytest.raises(UserInputError, match="sets both base_lr and blr"):
        parse_args(["--config", str(both)])
    for bad in ("0", "-1", "1.5"):
        with pytest.raises(UserInputError, match="accum_steps must be a whole number"):
            parse_args(["--accum_steps", bad])


def test_a_run_with_accum_steps_ends_as_one_with_the_whole_batch(small_digits, tmp_path):
    """One epoch (128 digits) of the tiny BiT: batch 4 x accum_steps 4 against batch 16; deterministic inputs.
    At lr 0.001 the two agree to ~1e-7; at 0.01 the steps amplify float rounding (the two sum each gradient in
    another order) to ~1e-3 in the AdamW moments within the epoch (measured on an AVX-512 Xeon)."""
    common = ["--config", TINY_CONFIG, "--data_url", small_digits, "--epochs", "1", "--deterministic", "True",
              "--crop_ratio", "1", "--hflip", "0", "--eval_interval", "0", "--log_interval", "10",
              "--base_lr", "0.001", "--warmup_length", "0"]
    logs = {}
    for name, batch in (("whole", ["--batch_size", "16"]), ("accum", ["--batch_size", "4", "--accum_steps", "4"])):
        result = run_script("train.py", *common, *batch, "--train_url", str(tmp_path / name))
        assert result.returncode == 0, result.stdout + result.stderr
        logs[name] = result.stdout
    steps = 128 // 16
    assert "effective batch 16 (batch_size 4 x 1 device(s) x accum_steps 4)" in logs["accum"]
    for log in logs.values():
        assert f"training bit_m_r50x1 on CIFAR10: {steps} steps per epoch" in log
        assert re.findall(r"^epoch: 1 step: (\d+), loss is", log, re.M)[-1] == str(steps)
    whole, accum = (load_checkpoint(str(tmp_path / name / "ckpt_0000" / f"bit_m_r50x1_0000-1_{steps}.ckpt"))
                    for name in ("whole", "accum"))
    assert whole.keys() == accum.keys()
    for key in whole:
        np.testing.assert_allclose(accum[key].asnumpy(), whole[key].asnumpy(), rtol=0, atol=1e-4, err_msg=key)


def test_train_reports_bad_accumulation_and_lr_settings_in_one_line(small_digits):
    common = ["--config", TINY_CONFIG, "--data_url", small_digits]
    assert_one_line_error(run_script("train.py", *common, "--update_freq", "0"), "accum_steps must be a whole number")
    assert_one_line_error(run_script("train.py", *common, "--blr", "1e-3", "--base_lr", "0.1"),
                          "--base_lr conflicts with blr 0.001")
