"""BiT ResNetV2 against timm's resnetv2 (an independent PyTorch implementation), through every
published weight layout and conv_pt2ckpt.py."""
import os

import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_script
from timm.models.resnetv2 import _create_resnetv2_bit, _load_weights

from src.models import create_model, list_models
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights
from src.weights.pretrained import load_inference_weights

LAYERS = [1, 2, 1, 1]
NUM_CLASSES = 7


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = _create_resnetv2_bit("resnetv2_50x1_bit", num_classes=NUM_CLASSES, layers=LAYERS, width_factor=1)
    with torch.no_grad():  # BiT's head starts at zero and GN at identity: perturb everything
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)


def timm_to_big_transfer(name):
    """timm key -> big_transfer bit_pytorch key (written independently of src/models/bit/convert.py)."""
    parts = name.split(".")
    if parts[0] == "stages":
        stage, block, rest = int(parts[1]), int(parts[3]), parts[4:]
        if rest[0] == "downsample":
            rest = ["downsample", rest[-1]]
        elif rest[0].startswith("norm"):
            rest = ["gn" + rest[0][-1], rest[1]]
        return f"body.block{stage + 1}.unit{block + 1:02d}." + ".".join(rest)
    return {"stem.conv.weight": "root.conv.weight", "norm.weight": "head.gn.weight", "norm.bias": "head.gn.bias",
            "head.fc.weight": "head.conv.weight", "head.fc.bias": "head.conv.bias"}[name]


def timm_to_npz(model):
    """The official .npz layout (TF names, HWIO kernels) of a timm model's weights."""
    def hwio(tensor):
        array = tensor.detach().numpy()
        return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array

    weights = {"resnet/root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
               "resnet/group_norm/gamma": hwio(model.norm.weight), "resnet/group_norm/beta": hwio(model.norm.bias),
               "resnet/head/conv2d/kernel": hwio(model.head.fc.weight),
               "resnet/head/conv2d/bias": hwio(model.head.fc.bias)}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f"resnet/block{i + 1}/unit{j + 1:02d}/"
            for part, index in (("a", 1), ("b", 2), ("c", 3)):
                weights[f"{prefix}{part}/standardized_conv2d/kernel"] = hwio(getattr(block, f"conv{index}").weight)
                weights[f"{prefix}{part}/group_norm/gamma"] = hwio(getattr(block, f"norm{index}").weight)
                weights[f"{prefix}{part}/group_norm/beta"] = hwio(getattr(block, f"norm{index}").bias)
            if block.downsample is not None:
                weights[f"{prefix}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    return weights


def mindspore_logits(ckpt_path, images, arch="bit_m_r50x1", **kwargs):
    network = create_model(arch, num_classes=NUM_CLASSES, layers=LAYERS, width_factor=1, **kwargs)
    load_weights(network, load_checkpoint(ckpt_path), ckpt_path)
    network.set_train(False)
    return network(ms.Tensor(images)).asnumpy()


def write_published(fmt, reference, tmp_path):
    state = reference.state_dict()
    if fmt == "timm":
        path = tmp_path / "timm_resnetv2.pth"
        torch.save(state, path)
    elif fmt == "big_transfer":  # as bit_pytorch/train.py saves it: DataParallel names inside {'model': ...}
        path = tmp_path / "BiT-M-R50x1.pth.tar"
        torch.save({"step": 10, "model": {f"module.{timm_to_big_transfer(k)}": v for k, v in state.items()}}, path)
    else:
        path = tmp_path / "BiT-M-R50x1.npz"
        np.savez(path, **timm_to_npz(reference))
    return str(path)


@pytest.mark.parametrize("fmt", ["timm", "big_transfer", "npz"])
def test_converted_weights_give_reference_logits(fmt, reference, images, tmp_path):
    source = write_published(fmt, reference, tmp_path)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    if fmt == "npz":  # the .npz we wrote is the official layout: timm's own loader reads it back
        check = _create_resnetv2_bit("resnetv2_50x1_bit", num_classes=NUM_CLASSES, layers=LAYERS, width_factor=1)
        _load_weights(check.eval(), source)
        np.testing.assert_allclose(check(torch.from_numpy(images)).detach().numpy(), expected, atol=1e-6)
    ckpt = str(tmp_path / "converted.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", source, "--ckpt_file", ckpt)
    assert result.returncode == 0, result.stderr
    logits = mindspore_logits(ckpt, images)
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["timm", "big_transfer", "npz"])
def test_published_weights_load_without_converting_first(fmt, reference, images, tmp_path):
    """--pretrained / eval.py take a published file as it is: converted in memory, read without torch."""
    network = create_model("bit_m_r50x1", num_classes=NUM_CLASSES, layers=LAYERS, width_factor=1)
    assert load_inference_weights(network, write_published(fmt, reference, tmp_path)) is False
    network.set_train(False)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(network(ms.Tensor(images)).asnumpy() - expected).max() <= 1e-4


def test_other_class_count_drops_only_the_head(reference, tmp_path):
    ckpt = str(tmp_path / "converted.ckpt")
    # checked against the registered bit_m_r50x1 (3-4-6-3 units), these 1-2-1-1 weights fall short
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", write_published("timm", reference, tmp_path),
                                     "--ckpt_file", ckpt, "--arch", "bit_m_r50x1"), "has no weight for")
    assert run_script("conv_pt2ckpt.py", "--pth_file", write_published("timm", reference, tmp_path),
                      "--ckpt_file", ckpt).returncode == 0
    network = create_model("bit_m_r50x1", num_classes=10, layers=LAYERS, width_factor=1)
    messages = []
    dropped = load_weights(network, load_checkpoint(ckpt), ckpt, head_prefixes=("head.conv.",), log=messages.append)
    assert sorted(dropped) == ["head.conv.bias", "head.conv.weight"] and "another class count" in messages[0]
    assert not network.head.conv.weight.asnumpy().any()  # BiT's zero head, ready for fine-tuning
    np.testing.assert_array_equal(network.root.conv.weight.asnumpy(), reference.stem.conv.weight.detach().numpy())


def test_model_args_are_checked_against_the_weights(reference, tmp_path):
    """BiT's --model_args are honoured: depths that do not fit the weights are one error line naming them."""
    ckpt = str(tmp_path / "converted.ckpt")
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", write_published("timm", reference, tmp_path),
                                     "--ckpt_file", ckpt, "--model_args", "{layers: [3, 4, 6, 3]}"),
                          "--model_args {'layers': [3, 4, 6, 3]} does not fit the weights", "layers=[1, 2, 1, 1]")
    assert not os.path.exists(ckpt)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", str(garbage), "--ckpt_file",
                                     str(tmp_path / "out.ckpt")), "cannot read")
    assert not (tmp_path / "out.ckpt").exists()
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", str(tmp_path / "other.pth"), "--ckpt_file",
                                     str(tmp_path / "out.ckpt")), "no BiT weights")


def test_registered_variants_match_timm_sizes(monkeypatch):
    assert {"bit_m_r50x1", "bit_m_r50x3", "bit_m_r101x1", "bit_m_r101x3", "bit_m_r152x2",
            "bit_m_r152x4"} <= set(list_models())
    network = create_model("bit_m_r50x1", num_classes=1000)
    reference = _create_resnetv2_bit("resnetv2_50x1_bit", num_classes=1000, layers=[3, 4, 6, 3], width_factor=1)
    assert sum(p.size for p in network.get_parameters()) == sum(p.numel() for p in reference.parameters())

    # the bigger variants differ only in depth and width: check what their factories ask for
    import src.models.bit.resnetv2 as resnetv2

    monkeypatch.setattr(resnetv2, "ResNetV2", lambda **kwargs: kwargs)
    expected = {"bit_m_r50x3": ([3, 4, 6, 3], 3), "bit_m_r101x1": ([3, 4, 23, 3], 1),
                "bit_m_r101x3": ([3, 4, 23, 3], 3), "bit_m_r152x2": ([3, 8, 36, 3], 2),
                "bit_m_r152x4": ([3, 8, 36, 3], 4)}
    for name, (layers, width) in expected.items():
        kwargs = create_model(name, num_classes=10)
        assert (kwargs["layers"], kwargs["width_factor"], kwargs["num_classes"]) == (layers, width, 10)
    assert create_model("bit_m_r101x3", layers=[1, 1, 1, 1])["layers"] == [1, 1, 1, 1]
