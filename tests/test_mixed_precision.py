"""Mixed precision checked, not assumed: under O2 / O3 the matmuls and convolutions compute in float16,
`keep_bn_fp32` keeps every normalisation in float32, and a dynamic loss scale halves on overflow and
doubles after `scale_window` clean steps."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.engine.train_one_step import TrainOneStepCell
from src.models import create_model
from src.runtime.amp import NORM_CELLS, apply_amp

MODELS = {
    "vit": (lambda: create_model("vit_base_patch16", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                 num_classes=5), 16),
    "bit": (lambda: create_model("bit_m_r50x1", layers=[1, 1, 1, 1], width_factor=0.5, num_classes=5), 32),
}


def computed_dtypes(network, image_size):
    """{cell name: (cell, output dtype)} of every matmul / convolution / normalisation cell in one forward pass
    (PyNative, forward hooks)."""
    seen = {}
    for name, cell in network.cells_and_names():
        if isinstance(cell, (nn.Dense, nn.Conv2d, *NORM_CELLS)):
            cell.register_forward_hook(lambda c, _, output, name=name: seen.__setitem__(name, (c, output.dtype)))
    network(ms.Tensor(np.random.default_rng(0).random((2, 3, image_size, image_size), np.float32)))
    return seen


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("level, keep_bn_fp32", [("O2", True), ("O3", True), ("O3", False)])
def test_matmuls_run_in_float16_and_norms_where_asked_in_float32(model_name, level, keep_bn_fp32):
    ms.set_context(mode=ms.PYNATIVE_MODE)
    build, image_size = MODELS[model_name]
    seen = computed_dtypes(apply_amp(build(), level, keep_bn_fp32), image_size)
    compute = {name: dtype for name, (cell, dtype) in seen.items() if isinstance(cell, (nn.Dense, nn.Conv2d))}
    norms = {name: dtype for name, (cell, dtype) in seen.items() if isinstance(cell, tuple(NORM_CELLS))}
    assert len(compute) >= 5 and len(norms) >= 3
    assert set(compute.values()) == {ms.float16}, compute
    assert set(norms.values()) == {ms.float32 if keep_bn_fp32 else ms.float16}, norms
    ms.set_context(mode=ms.GRAPH_MODE)


def test_beit_q_v_biased_projection_runs_in_float16_under_o2():
    """BEiT's qkv layer is applied with its q / v biases through Dense.affine, outside the cell's own call."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    network = create_model("beit_base_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                           num_classes=5)
    assert network.blocks[0].attn.use_qv_bias
    seen = {}
    network.blocks[0].attn.attention.register_forward_hook(
        lambda cell, inputs, output: seen.__setitem__("qkv", inputs[0].dtype))
    network = apply_amp(network, "O2", True)
    network(ms.Tensor(np.random.default_rng(0).random((2, 3, 16, 16), np.float32)))
    assert seen == {"qkv": ms.float16}
    ms.set_context(mode=ms.GRAPH_MODE)


def test_o0_leaves_everything_in_float32():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    build, image_size = MODELS["vit"]
    seen = computed_dtypes(apply_amp(build(), "O0"), image_size)
    assert {dtype for _, dtype in seen.values()} == {ms.float32}
    ms.set_context(mode=ms.GRAPH_MODE)


class ScaledSum(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.ones(3, np.float32)), name="w")

    def construct(self, x):
        return (self.w * x).sum()


def test_dynamic_scale_halves_on_overflow_and_doubles_after_scale_window_clean_steps():
    ms.set_context(mode=ms.GRAPH_MODE)
    net = ScaledSum()
    manager = nn.DynamicLossScaleUpdateCell(loss_scale_value=1024.0, scale_factor=2, scale_window=3)
    step = TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1), manager)
    clean, overflowing = ms.Tensor(np.ones(3, np.float32)), ms.Tensor(np.array([np.inf, 1, 1], np.float32))
    scales = []
    for x in (overflowing, clean, clean, clean, clean, overflowing, overflowing, clean):
        _, overflow, _, _ = step(x)
        scales.append((bool(overflow.asnumpy()), float(step.scale_sense.asnumpy())))
    assert scales == [(True, 512.0), (False, 512.0), (False, 512.0), (False, 1024.0), (False, 1024.0),
                      (True, 512.0), (True, 256.0), (False, 256.0)]
    # each of the five clean steps moved the weights by the full lr x gradient, the one that raised the scale too
    np.testing.assert_allclose(net.w.asnumpy(), 1 - 0.1 * 5, rtol=1e-6)
