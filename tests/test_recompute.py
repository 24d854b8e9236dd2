"""Recompute (activation checkpointing): every transformer block and BiT unit is marked, and the gradients
equal those computed without it."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from src.models import create_model
from src.models.layers import recompute_units
from src.models.mae.mae import MaePretrainLoss

VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)
# name: (build, image size, blocks to mark); BEiT with drop path: the recomputed forward must draw the same masks
MODELS = {
    "beit": (lambda: create_model("beit_base_patch16_224", **VIT, num_classes=5, use_rel_pos_bias=True,
                                  init_values=0.1, drop_path_rate=0.3), 16, 3),
    "mae_pretrain": (lambda: create_model("mae_vit_base_patch16", **VIT, decoder_embed_dim=16, decoder_depth=2,
                                          decoder_num_heads=2, norm_pix_loss=True), 16, 3 + 2),
    "bit": (lambda: create_model("bit_m_r50x1", layers=[1, 2, 1, 1], width_factor=0.5, num_classes=5), 32, 5),
}


def gradients(model_name, recompute):
    build, image_size, _ = MODELS[model_name]
    ms.set_seed(0)
    network = build()
    if recompute:
        recompute_units(network)
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((2, 3, image_size, image_size)).astype(np.float32))
    labels = ms.Tensor(np.array([1, 3], np.int32))
    with_loss = MaePretrainLoss(network) if model_name == "mae_pretrain" else \
        nn.WithLossCell(network, nn.CrossEntropyLoss())
    weights = ms.ParameterTuple(network.trainable_params())
    with_loss.set_train()
    grads = ops.GradOperation(get_by_list=True)(with_loss, weights)(images, labels)
    return {param.name: grad.asnumpy() for param, grad in zip(weights, grads)}


@pytest.mark.parametrize("model_name", MODELS)
def test_recompute_marks_every_block_and_keeps_the_gradients(model_name):
    ms.set_context(mode=ms.GRAPH_MODE)
    build, _, blocks = MODELS[model_name]
    assert recompute_units(build()) == blocks
    plain, recomputed = gradients(model_name, False), gradients(model_name, True)
    assert plain.keys() == recomputed.keys()
    for name, grad in plain.items():
        np.testing.assert_allclose(recomputed[name], grad, rtol=0, atol=1e-6, err_msg=name)
    assert any(np.abs(grad).max() > 1e-4 for grad in plain.values())
