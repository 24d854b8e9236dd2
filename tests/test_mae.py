"""MAE: masking, loss, the pretraining model against the authors' code, pretraining on real photos, and the
fine-tuning ViT against timm."""
import os
import re
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import ROOT, run_script
from sample_photos import write_photo_imagenet
from timm.models.vision_transformer import VisionTransformer as TimmViT

from src.models import create_model, list_models
from src.models.mae.mae import MaskedAutoencoderViT, sincos_2d, unpatchify
from src.models.vit_convert import convert_vit_weights
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights

ms.set_context(mode=ms.GRAPH_MODE)
TINY_PRETRAIN = f"{ROOT}/src/configs/mae_tiny_pretrain_cpu.yaml"
ENCODER = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)


def tiny_mae(mask_ratio=0.75, norm_pix_loss=True):
    return MaskedAutoencoderViT(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=mask_ratio,
                                norm_pix_loss=norm_pix_loss, **ENCODER)


@pytest.fixture(scope="module")
def images():
    return ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))


@pytest.mark.parametrize("mask_ratio", [0.75, 0.5, 0.4])
def test_masking_keeps_a_fixed_count_and_ids_restore_inverts_the_shuffle(mask_ratio, images):
    mae = tiny_mae(mask_ratio)
    tokens = mae.patch_embed(images)
    kept, mask, ids_restore = mae.random_masking(tokens)
    length = tokens.shape[1]
    keep = int(length * (1 - mask_ratio))
    assert kept.shape == (4, keep, 32)
    mask, ids_restore = mask.asnumpy(), ids_restore.asnumpy()
    np.testing.assert_array_equal(mask.sum(1), length - keep)
    for sample in range(4):
        assert sorted(ids_restore[sample]) == list(range(length))  # a permutation
        # the kept tokens are exactly the unmasked positions, in shuffle order
        visible = np.where(mask[sample] == 0)[0]
        kept_rows = {tuple(np.round(row, 5)) for row in kept.asnumpy()[sample]}
        assert kept_rows == {tuple(np.round(row, 5)) for row in tokens.asnumpy()[sample][visible]}
    assert not np.array_equal(mask[0], mask[1]) or not np.array_equal(mask[1], mask[2])  # per sample


def test_loss_counts_masked_patches_only_with_normalised_targets(images):
    mae = tiny_mae(norm_pix_loss=True)
    loss, pred, mask = mae(images)
    target = mae.patchify(images).asnumpy()
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    per_patch = ((pred.asnumpy() - target) ** 2).mean(-1)
    mask = mask.asnumpy()
    assert float(loss.asnumpy()) == pytest.approx((per_patch * mask).sum() / mask.sum(), rel=1e-5)
    assert float(loss.asnumpy()) != pytest.approx(per_patch.mean(), rel=1e-5)  # not over all patches


def test_patchify_round_trip_and_sincos_table(images):
    np.testing.assert_array_equal(unpatchify(tiny_mae().patchify(images), 8).asnumpy(), images.asnumpy())
    table = sincos_2d(8, 3)
    assert table.shape == (10, 8) and not table[0].any()
    # first half of the channels follows the column, second half the row (MAE's meshgrid(w, h) order)
    row, col = 1, 2
    omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
    expected = np.concatenate([np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)])
    np.testing.assert_allclose(table[1 + row * 3 + col], expected, atol=1e-6)


def test_mae_variants_registered_with_the_paper_decoder(monkeypatch):
    import src.models.mae.mae as mae_module

    assert {"mae_vit_base_patch16", "mae_vit_large_patch16", "mae_vit_huge_patch14", "vit_base_patch16",
            "vit_large_patch16", "vit_huge_patch14"} <= set(list_models())
    monkeypatch.setattr(mae_module, "MaskedAutoencoderViT", lambda **kwargs: kwargs)
    huge = create_model("mae_vit_huge_patch14")
    assert (huge["patch_size"], huge["embed_dim"], huge["depth"], huge["decoder_embed_dim"], huge["decoder_depth"],
            huge["decoder_num_heads"]) == (14, 1280, 32, 512, 8, 16)


@pytest.mark.parametrize("global_pool", [True, False])
def test_fine_tuning_vit_matches_timm(global_pool):
    torch.manual_seed(0)
    reference = TimmViT(num_classes=5, global_pool="avg" if global_pool else "token", fc_norm=global_pool,
                        **ENCODER).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    network = create_model("vit_base_patch16", num_classes=5, global_pool=global_pool, **ENCODER)
    network.set_train(False)
    load_weights(network, convert_vit_weights({k: v.numpy() for k, v in reference.state_dict().items()}, network),
                 "timm")
    images = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(network(ms.Tensor(images)).asnumpy() - expected).max() <= 1e-4


def published_names(network):
    """{name as facebookresearch/mae publishes it: tensor} of a MindSpore model's parameters."""
    return {re.sub(r"\.beta$", ".bias", re.sub(r"\.gamma$", ".weight", p.name)): torch.from_numpy(p.asnumpy())
            for p in network.get_parameters()}


def test_pretraining_checkpoint_converts_into_the_fine_tuning_model(tmp_path):
    """As MAE's main_finetune, through conv_pt2ckpt.py at full size: the encoder loads, the decoder is
    dropped, head and fc_norm start anew."""
    mae = create_model("mae_vit_base_patch16")
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": published_names(mae)}, path)
    ckpt = str(tmp_path / "vit_base_from_mae.ckpt")
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", ckpt, "--arch", "vit_base_patch16")
    assert result.returncode == 0, result.stderr
    assert "head.weight" in result.stdout and "fc_norm.gamma" in result.stdout  # the initialised-anew message
    converted = load_checkpoint(ckpt)
    assert not any(name.startswith(("decoder", "mask_token")) for name in converted)
    np.testing.assert_array_equal(converted["blocks.11.attn.qkv.weight"].asnumpy(),
                                  mae.blocks[11].attn.qkv.weight.asnumpy())


class FixedNoise(ms.nn.Cell):
    """Stands in for the model's masking noise, so that both implementations remove the same patches."""

    def __init__(self, noise):
        super().__init__()
        self.noise = ms.Tensor(noise)

    def construct(self, shape):
        return self.noise


def test_pretraining_equals_the_authors_mae_with_a_converted_checkpoint(tmp_path):
    """facebookresearch/mae's MaskedAutoencoderViT (tests/reference/mae): the whole pretraining model, decoder
    included, converted from the authors' layout through conv_pt2ckpt.py, on the same images and mask."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    try:
        from mae.models_mae import MaskedAutoencoderViT as AuthorsMae
    finally:
        sys.path.remove(os.path.join(ROOT, "tests", "reference"))
    sizes = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4, decoder_embed_dim=16, decoder_depth=2,
                 decoder_num_heads=2, norm_pix_loss=True)
    torch.manual_seed(0)
    reference = AuthorsMae(img_size=32, **sizes).eval()
    with torch.no_grad():  # unit norms, zero biases and tokens would hide mistakes: perturb everything
        for name, param in reference.named_parameters():
            if "pos_embed" not in name:
                param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path / "mae_pretrain_tiny.pth"
    torch.save({"model": reference.state_dict()}, path)
    ckpt = str(tmp_path / "mae_tiny.ckpt")
    model_args = "{" + ", ".join(f"{key}: {value}" for key, value in sizes.items()) + "}"
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(path), "--ckpt_file", ckpt, "--arch",
                        "mae_vit_base_patch16", "--img_size", "32", "--model_args", model_args)
    assert result.returncode == 0, result.stderr
    ours = create_model("mae_vit_base_patch16", img_size=32, **sizes)
    load_weights(ours, load_checkpoint(ckpt), ckpt)
    ours.set_train(False)
    rng = np.random.default_rng(3)
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    noise = rng.random((2, 16)).astype(np.float32)
    ours.noise = FixedNoise(noise)
    loss, pred, mask = (output.asnumpy() for output in ours(ms.Tensor(images)))
    with torch.no_grad():
        their_loss, their_pred, their_mask = (output.numpy() for output in reference(
            torch.from_numpy(images), 0.75, torch.from_numpy(noise)))
    np.testing.assert_array_equal(mask, their_mask)
    assert np.abs(pred - their_pred).max() < 1e-5
    assert abs(float(loss) - float(their_loss)) < 1e-5


def test_pretrained_encoder_loads_at_another_resolution():
    mae = tiny_mae()
    network = create_model("vit_base_patch16", num_classes=7, img_size=48, patch_size=8, embed_dim=32, depth=2,
                           num_heads=4)
    messages = []
    converted = convert_vit_weights({k: v.numpy() for k, v in published_names(mae).items()}, network)
    load_weights(network, converted, "mae", missing_ok=("head.", "fc_norm."), log=messages.append)
    assert "head.weight" in messages[0] and "fc_norm.gamma" in messages[0]
    np.testing.assert_array_equal(network.blocks[1].attn.qkv.weight.asnumpy(), mae.blocks[1].attn.qkv.weight.asnumpy())
    assert network.pos_embed.shape == (1, 1 + 6 * 6, 32)  # 4x4 grid resized to 6x6, cls kept
    np.testing.assert_array_equal(network.pos_embed.asnumpy()[0, 0], mae.pos_embed.asnumpy()[0, 0])


def test_pretraining_on_real_photos_lowers_the_loss(tmp_path):
    data = tmp_path / "photos"
    write_photo_imagenet(str(data), num_classes=8, train_per_class=6, val_per_class=0)
    file_list = tmp_path / "list.txt"
    photos = sorted((data / "train").rglob("*.JPEG"))
    file_list.write_text("".join(f"{p.relative_to(data / 'train')}\n" for p in photos))
    result = run_script("train.py", "--config", TINY_PRETRAIN, "--data_url", str(data / "train"), "--file_list",
                        str(file_list), "--train_url", str(tmp_path / "run"), "--epochs", "20", "--log_interval", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    losses = {}
    for epoch, loss in re.findall(r"^epoch: (\d+) step: \d+, loss is ([0-9.]+)$", result.stdout, re.M):
        losses.setdefault(int(epoch), []).append(float(loss))
    assert len(losses) == 20 and "acc:" not in result.stdout  # nothing to evaluate in pretraining
    assert np.mean(losses[20]) < 0.8 * np.mean(losses[1])
    ckpt = next((tmp_path / "run" / "ckpt_0000").glob("*-20_6.ckpt"))
    assert "decoder_pred.weight" in load_checkpoint(str(ckpt))


def test_visualisation_panels_paste_the_visible_patches(tmp_path):
    from visualize_mae import reconstruction_panels

    mae = tiny_mae()
    mae.set_train(False)
    image = np.random.default_rng(3).standard_normal((3, 32, 32)).astype(np.float32)
    (original, masked, reconstruction, pasted), _ = reconstruction_panels(mae, image, [0.5] * 3, [0.25] * 3)
    assert original.shape == masked.shape == reconstruction.shape == pasted.shape == (32, 32, 3)
    visible = 0
    for row in range(4):
        for col in range(4):
            patch = np.s_[row * 8:(row + 1) * 8, col * 8:(col + 1) * 8]
            if np.array_equal(masked[patch], original[patch]):
                visible += 1
                np.testing.assert_array_equal(pasted[patch], original[patch])
            else:
                np.testing.assert_array_equal(pasted[patch], reconstruction[patch])
    assert visible == mae.num_keep == 4

    # the command line writes one 4-panel PNG per image
    photos = tmp_path / "photos"
    write_photo_imagenet(str(photos), num_classes=1, train_per_class=1, val_per_class=0)
    image_path = next(photos.rglob("*.JPEG"))
    ckpt = str(tmp_path / "mae.ckpt")
    from src.weights.checkpoint import save_checkpoint

    save_checkpoint(create_model("mae_vit_base_patch16", img_size=32, patch_size=8, embed_dim=64, depth=2,
                                 num_heads=4, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2), ckpt)
    result = run_script("visualize_mae.py", "--config", TINY_PRETRAIN, "--pretrained", ckpt, str(image_path),
                        "--out", str(tmp_path / "vis"))
    assert result.returncode == 0, result.stderr
    from PIL import Image

    assert Image.open(tmp_path / "vis" / f"{image_path.stem}_mae.png").size == (4 * 32, 32)


def test_lars_follows_maes_update():
    from mindspore import nn

    from src.optim.optimizer import LARS

    dense = nn.Dense(3, 2)
    weight, bias = dense.weight.asnumpy().copy(), dense.bias.asnumpy().copy()
    optimizer = LARS(dense.trainable_params(), ms.Tensor(np.array([0.5, 0.2], np.float32)), momentum=0.9,
                     weight_decay=0.1)
    mu_w, mu_b = np.zeros_like(weight), np.zeros_like(bias)
    rng = np.random.default_rng(0)
    for lr in (0.5, 0.2):
        grad_w, grad_b = rng.standard_normal(weight.shape).astype(np.float32), rng.standard_normal(2).astype(np.float32)
        optimizer((ms.Tensor(grad_w), ms.Tensor(grad_b)))
        update = grad_w + 0.1 * weight  # weights: decay and trust ratio
        update *= 0.001 * np.linalg.norm(weight) / np.linalg.norm(update)
        mu_w = 0.9 * mu_w + update
        mu_b = 0.9 * mu_b + grad_b  # 1-d: neither
        weight, bias = weight - lr * mu_w, bias - lr * mu_b
    np.testing.assert_allclose(dense.weight.asnumpy(), weight, rtol=1e-5)
    np.testing.assert_allclose(dense.bias.asnumpy(), bias, rtol=1e-5)


@pytest.mark.parametrize("mode", ["linear_probe", "freeze_blocks"])
def test_linear_probe_and_partial_fine_tuning_train_only_what_they_should(mode, tmp_path):
    from src.weights.checkpoint import save_checkpoint

    data = str(tmp_path / "imagenet")
    write_photo_imagenet(data, num_classes=3, train_per_class=4, val_per_class=1)
    common = ["--config", f"{ROOT}/src/configs/beit_tiny_imagenet_cpu.yaml", "--arch", "vit_base_patch16",
              "--init_values", "0", "--rel_pos_bias", "False", "--abs_pos_emb", "True", "--global_pool", "False",
              "--layer_decay", "1.0", "--data_url", data, "--epochs", "1", "--eval_interval", "0"]
    start = create_model("vit_base_patch16", num_classes=3, img_size=32, patch_size=8, embed_dim=64, depth=2,
                         num_heads=2, global_pool=False, head_bn=mode == "linear_probe")
    pretrained = str(tmp_path / "start.ckpt")
    save_checkpoint(start, pretrained)
    extra = ["--linear_probe", "True", "--optimizer", "lars", "--base_lr", "0.5"] if mode == "linear_probe" \
        else ["--freeze_blocks", "1"]
    result = run_script("train.py", *common, *extra, "--pretrained", pretrained, "--train_url", str(tmp_path / "run"))
    assert result.returncode == 0, result.stdout + result.stderr
    trained = load_checkpoint(str(next((tmp_path / "run" / "ckpt_0000").glob("*.ckpt"))))
    before = {p.name: p.asnumpy() for p in start.get_parameters()}
    changed = {name for name in before if not np.array_equal(trained[name].asnumpy(), before[name])}
    if mode == "linear_probe":
        assert {"head.weight", "head.bias"} <= changed
        assert changed - {"head.weight", "head.bias"} <= {"head_norm.moving_mean", "head_norm.moving_variance"}
        assert "head_norm.moving_mean" in changed  # BatchNorm statistics follow the features
    else:
        assert not changed & {name for name in before if name.startswith(("blocks.0.", "patch_embed", "cls_token",
                                                                          "pos_embed"))}
        assert {"blocks.1.attn.qkv.weight", "head.weight", "norm.gamma"} <= changed
