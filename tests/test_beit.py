"""BEiT / BEiT v2 against timm's Beit (an independent PyTorch implementation of unilm's model)."""
import json
import os
import re
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_script
from sample_photos import write_photo_imagenet
from timm.models.beit import Beit as TimmBeit
from timm.models.beit import checkpoint_filter_fn

from src.args import parse_args
from src.models import create_model, list_models
from src.models.layers import relative_position_index
from src.models.vit import VisionTransformer
from src.models.vit_convert import convert_vit_weights, resize_pos_embed
from src.optim.optimizer import create_optimizer
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5, init_values=0.1)
TINY_CONFIG = f"{ROOT}/src/configs/beit_tiny_imagenet_cpu.yaml"


def timm_beit(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = TimmBeit(**kwargs).eval()
    with torch.no_grad():  # zero tables and tiny heads would hide mistakes: perturb everything
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model


def ours(**kwargs):
    network = VisionTransformer(**kwargs)
    network.set_train(False)
    return network


def logits(network, images):
    return network(ms.Tensor(images)).asnumpy()


def unilm_state_dict(model):
    """As unilm publishes: inside {'model': ...}, with the relative_position_index buffers."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for name, module in model.named_modules():
        if hasattr(module, "relative_position_index") and module.relative_position_index is not None:
            state[f"{name}.relative_position_index"] = module.relative_position_index.clone()
    return {"model": state}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("variant", [
    dict(use_abs_pos_emb=False, use_rel_pos_bias=True),                            # BEiT fine-tuning models
    dict(use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=True),
    dict(use_abs_pos_emb=True, use_rel_pos_bias=False, global_pool="token"),      # cls token, final norm
])
def test_logits_match_timm(variant, images):
    variant = dict(variant)
    pool = variant.pop("global_pool", "avg")
    reference = timm_beit(global_pool=pool, **TINY, **variant)
    network = ours(use_mean_pooling=pool == "avg", **TINY, **variant)
    weights = {k: v.numpy() for k, v in reference.state_dict().items()}
    load_weights(network, convert_vit_weights(weights, network), "timm")
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4


def test_shared_table_is_copied_into_every_block(images):
    """unilm's pretrained checkpoints share one table; the fine-tuning model has one per block."""
    reference = timm_beit(use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, **TINY)
    network = ours(use_abs_pos_emb=False, use_rel_pos_bias=True, **TINY)
    state = {k: v.numpy() for k, v in unilm_state_dict(reference)["model"].items()}
    load_weights(network, convert_vit_weights(state, network), "unilm")
    shared = state["rel_pos_bias.relative_position_bias_table"]
    for block in network.blocks:
        np.testing.assert_array_equal(block.attn.relative_position_bias_table.asnumpy(), shared)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4


@pytest.mark.parametrize("abs_pos", [False, True])
def test_resolution_change_resizes_like_timm(abs_pos):
    kwargs = dict(TINY, use_abs_pos_emb=abs_pos, use_rel_pos_bias=True)
    source = timm_beit(**kwargs)
    reference = TimmBeit(**dict(kwargs, img_size=48)).eval()
    reference.load_state_dict(checkpoint_filter_fn(source.state_dict(), reference), strict=False)
    network = ours(**dict(kwargs, img_size=48))
    load_weights(network, convert_vit_weights({k: v.numpy() for k, v in source.state_dict().items()}, network),
                 "timm")
    images = np.random.default_rng(1).standard_normal((2, 3, 48, 48)).astype(np.float32)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4


@pytest.mark.parametrize("old, new", [(14, (24, 24)), (24, (14, 14)), (16, (10, 12)), (7, (32, 32)), (14, (14, 20))])
def test_pos_embed_resize_is_torchs_antialiased_bicubic_without_torch(old, new):
    import torch.nn.functional as F

    pos_embed = np.random.default_rng(old).standard_normal((1, 1 + old * old, 8)).astype(np.float32)
    tokens = torch.from_numpy(pos_embed[:, 1:]).reshape(1, old, old, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(tokens, size=new, mode="bicubic", align_corners=False, antialias=True)
    resized = resize_pos_embed(pos_embed, new)
    np.testing.assert_array_equal(resized[:, 0], pos_embed[:, 0])  # the cls token is kept
    np.testing.assert_allclose(resized[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, -1, 8).numpy(), rtol=0,
                               atol=1e-5)
    # and it runs where torch cannot be imported
    code = ("import sys; sys.modules['torch'] = None; import numpy as np; "
            "from src.models.vit_convert import resize_pos_embed; "
            f"print(resize_pos_embed(np.ones((1, {1 + old * old}, 2), np.float32), {new}).shape)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == f"(1, {1 + new[0] * new[1]}, 2)", result.stderr


def test_relative_position_index_matches_timm():
    from timm.models.beit import gen_relative_position_index

    for window in ((3, 3), (4, 6)):
        np.testing.assert_array_equal(relative_position_index(window), gen_relative_position_index(window).numpy())


def test_conv_pt2ckpt_converts_a_published_base_checkpoint(tmp_path):
    """The seed's beit_base_patch16_224_pt22k_ft22k layout at full size, through the command line."""
    reference = timm_beit(use_abs_pos_emb=False, use_rel_pos_bias=True, init_values=0.1, num_classes=21841,
                          img_size=224)
    path = tmp_path / "beit_base_patch16_224_pt22k_ft22k.pth"
    torch.save(unilm_state_dict(reference), path)
    ckpt = str(tmp_path / "pretrained_beit.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", ckpt, "--arch",
                        "beit_base_patch16_224_pt22k_ft22k")
    assert result.returncode == 0, result.stderr
    tensors = len(torch.load(path, weights_only=True)["model"])
    assert f"converting: {tensors}/{tensors} (100%)" in result.stderr  # progress lines in a log
    network = create_model("beit_base_patch16_224_pt22k_ft22k", num_classes=21841)
    network.set_train(False)
    load_weights(network, load_checkpoint(ckpt), ckpt)
    images = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", ckpt),
                          "needs --arch")


def test_conv_pt2ckpt_model_args_win_where_they_fit_the_weights(tmp_path, images):
    """--model_args may name a key the converter infers (num_classes from the head): the user's value is used
    where the weights fit it, and one error line names it where they do not."""
    reference = timm_beit(**TINY, use_abs_pos_emb=False, use_rel_pos_bias=True)
    path = tmp_path / "tiny.pth"
    torch.save(unilm_state_dict(reference), path)
    sizes = "patch_size: 8, embed_dim: 32, depth: 2, num_heads: 4, init_values: 0.1"
    ckpt = str(tmp_path / "tiny.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", ckpt, "--arch",
                        "beit_base_patch16_224", "--img_size", "32", "--model_args", f"{{{sizes}, num_classes: 5}}")
    assert result.returncode == 0, result.stderr
    network = ours(**TINY, use_abs_pos_emb=False, use_rel_pos_bias=True)
    load_weights(network, load_checkpoint(ckpt), ckpt)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4
    misfit = str(tmp_path / "misfit.ckpt")
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", misfit, "--arch",
                                     "beit_base_patch16_224", "--img_size", "32", "--model_args",
                                     f"{{{sizes}, num_classes: 7}}"),
                          "--model_args {'num_classes': 7} does not fit the weights", "(num_classes=5)")
    assert not os.path.exists(misfit)
    unclosed = run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", misfit, "--arch",
                          "beit_base_patch16_224", "--model_args", f"{{{sizes}")  # a yaml.YAMLError traceback before
    assert unclosed.returncode == 2 and "Traceback" not in unclosed.stderr, unclosed.stderr
    assert unclosed.stderr.strip().endswith("argument --model_args: not valid YAML: expected ',' or '}', but got "
                                            "'<stream end>' at line 1, column 72"), unclosed.stderr
    assert not os.path.exists(misfit)


def test_registry_and_unilm_argument_names():
    assert {"beit_base_patch16_224", "beit_base_patch16_384", "beit_large_patch16_224", "beit_large_patch16_384",
            "beit_large_patch16_512", "beit_base_patch16_224_pt22k_ft22k", "beitv2_base_patch16_224",
            "beitv2_large_patch16_224"} <= set(list_models())
    network = create_model("beitv2_large_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4,
                           mlp_ratio=2.0, num_classes=7, use_abs_pos_emb=True, use_rel_pos_bias=False,
                           use_shared_rel_pos_bias=True, use_mean_pooling=False, init_values=1e-5,
                           drop_path_rate=0.1)
    assert len(network.blocks) == 3 and network.head.weight.shape == (7, 32)
    assert network.rel_pos_bias.relative_position_bias_table.shape == (7 * 7 + 3, 4)
    assert float(network.blocks[0].gamma_1.asnumpy()[0]) == pytest.approx(1e-5)


def test_layer_decay_and_no_decay_groups_follow_unilm():
    args = parse_args(["--config", TINY_CONFIG, "--layer_decay", "0.5", "--weight_decay", "0.05"])
    network = ours(**dict(TINY, use_abs_pos_emb=True, use_rel_pos_bias=True))
    schedule = np.linspace(1.0, 0.1, 10).astype(np.float32)
    optimizer = create_optimizer(args, network, schedule)
    depth = len(network.blocks)
    lrs = dict(zip([p.name for p in optimizer.parameters], optimizer.learning_rate))
    decays = dict(zip([p.name for p in optimizer.parameters], optimizer.weight_decay))
    expected_layer = {"cls_token": 0, "pos_embed": 0, "patch_embed.proj.weight": 0,
                      "blocks.0.attn.qkv.weight": 1, "blocks.1.mlp.fc2.weight": 2, "head.weight": depth + 1,
                      "fc_norm.gamma": depth + 1}
    for name, layer in expected_layer.items():
        np.testing.assert_allclose(lrs[name].learning_rate.asnumpy(), schedule * 0.5 ** (depth + 1 - layer), rtol=1e-6)
    for name in ("cls_token", "pos_embed", "blocks.0.attn.relative_position_bias_table", "blocks.0.gamma_1",
                 "blocks.0.norm1.gamma", "blocks.0.attn.q_bias", "head.bias"):
        assert float(decays[name]) == 0.0, name
    for name in ("blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"):
        assert float(decays[name]) == pytest.approx(0.05), name


def test_tiny_beit_trains_evaluates_and_predicts(tmp_path):
    data = str(tmp_path / "imagenet")
    write_photo_imagenet(data, num_classes=3, train_per_class=8, val_per_class=3)
    out = tmp_path / "run"
    result = run_script("train.py", "--config", TINY_CONFIG, "--data_url", data, "--train_url", str(out),
                        "--epochs", "4", "--log_interval", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    losses = [float(v) for v in re.findall(r"loss is ([0-9.]+)$", result.stdout, re.M)]
    assert len(losses) == 4 * 3 and np.isfinite(losses).all()
    best = next((out / "ckpt_best_0000").glob("*.ckpt"))
    evaluation = run_script("eval.py", "--config", TINY_CONFIG, "--data_url", data, "--pretrained", str(best))
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout.strip().splitlines()[-1])
    assert metrics["num_samples"] == 9 and 0 <= metrics["top1"] <= metrics["top5"] == 1.0  # 3 classes
    broken = tmp_path / "broken.JPEG"
    broken.write_bytes(b"plain text, not a JPEG")
    predict = ["predict.py", "--config", TINY_CONFIG, "--data_url", data, "--pretrained", str(best)]
    prediction = run_script(*predict, f"{data}/val/n00000001", str(broken), "--topk", "2")
    assert prediction.returncode == 0, prediction.stderr
    assert f"warning: unreadable image {broken}" in prediction.stderr and "left out; 1 so far" in prediction.stderr
    results = json.loads(prediction.stdout.strip().splitlines()[-1])
    assert len(results) == 3 and all(len(r["predictions"]) == 2 for r in results)
    folders = sorted(os.listdir(f"{data}/train"))  # the class names: train/'s folders, in label order
    assert all(p["name"] == folders[p["label"]] for r in results for p in r["predictions"])
    nothing = run_script(*predict, str(broken))  # the warning naming the file, then the error
    assert nothing.returncode != 0 and "Traceback" not in nothing.stderr, nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == "error: none of the 1 image(s) can be read", nothing.stderr
    assert {p["name"] for r in results for p in r["predictions"]} <= {"n00000000", "n00000001", "n00000002"}
    for r in results:
        assert r["predictions"][0]["score"] >= r["predictions"][1]["score"]


def test_conversion_needs_no_torch(tmp_path):
    """A checkpoint with absolute and relative position tables, converted for another resolution (both tables
    resized) where torch cannot be imported, gives what it gives with torch importable."""
    reference = timm_beit(**TINY, use_abs_pos_emb=True, use_rel_pos_bias=True)
    path = tmp_path / "tiny.pth"
    torch.save(unilm_state_dict(reference), path)
    sizes = "{patch_size: 8, embed_dim: 32, depth: 2, num_heads: 4, init_values: 0.1, use_abs_pos_emb: true}"
    command = ["--pth_file", str(path), "--arch", "beit_base_patch16_224", "--img_size", "48", "--model_args", sizes]
    with_torch = run_script("conv_pt2ckpt.py", *command, "--ckpt_file", str(tmp_path / "with_torch.ckpt"))
    assert with_torch.returncode == 0, with_torch.stderr
    blocked = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
               "runpy.run_path('conv_pt2ckpt.py', run_name='__main__')")
    without_torch = run_script("-c", blocked, "conv_pt2ckpt.py", *command, "--ckpt_file",
                               str(tmp_path / "without_torch.ckpt"))
    assert without_torch.returncode == 0, without_torch.stderr
    expected, got = (load_checkpoint(str(tmp_path / f"{name}.ckpt")) for name in ("with_torch", "without_torch"))
    assert expected.keys() == got.keys() and "pos_embed" in got
    assert got["pos_embed"].shape == (1, 1 + 6 * 6, 32)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key].asnumpy(), value.asnumpy(), err_msg=key)
