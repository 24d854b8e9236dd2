"""src/ops/cpu_kernels.py: the fused CPU kernels equal PyTorch's ops, forward and backward, and fall back
to MindSpore's own kernels when disabled or when nothing can be compiled."""
import logging
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
from conftest import switch_fused_kernels_off
from mindspore import nn, ops

from src.ops import cpu_kernels
from src.ops.conv import Conv2d

ms.set_context(mode=ms.GRAPH_MODE)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


class WeightedSum(nn.Cell):
    """sum(out * w) with a different w at every position, so that each output's gradient differs."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def construct(self, x):
        out = self.cell(x)
        return (out * ops.cos(ops.arange(out.size).reshape(out.shape).astype(out.dtype))).sum()


def ours_with_gradients(cell, x):
    """(output, d input, {parameter name: gradient}) of `cell` at numpy `x`."""
    with_sum = WeightedSum(cell)
    params = with_sum.trainable_params()
    (grad_input,), grad_params = ops.GradOperation(get_all=True, get_by_list=True)(with_sum, params)(ms.Tensor(x))
    names = [param.name.split(".")[-1] for param in params]
    return (cell(ms.Tensor(x)).asnumpy(), grad_input.asnumpy(),
            {name: grad.asnumpy() for name, grad in zip(names, grad_params)})


def torch_with_gradients(function, x, params=()):
    x = torch.tensor(x, requires_grad=True)
    out = function(x)
    (out * torch.cos(torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape))).sum().backward()
    return out.detach().numpy(), x.grad.numpy(), [param.grad.numpy() for param in params]


def sample(shape, seed=0, scale=2.0, offset=0.5):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(np.float32)


def assert_close(ours, theirs, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


@pytest.fixture(autouse=True)
def require_kernels():
    assert cpu_kernels.fused_kernels_enabled(), "the fused kernels did not compile on this CPU machine"


def check_normalization(norm, reference, x):
    """`norm` (gamma / beta) against the torch `reference` (weight / bias) with the same random affine."""
    size = norm.gamma.shape[0]
    norm.gamma.set_data(ms.Tensor(sample((size,), seed=1)))
    norm.beta.set_data(ms.Tensor(sample((size,), seed=2)))
    reference.weight.data = torch.tensor(norm.gamma.asnumpy())
    reference.bias.data = torch.tensor(norm.beta.asnumpy())
    out, grad, params = ours_with_gradients(norm, x)
    ref_out, ref_grad, (ref_gamma, ref_beta) = torch_with_gradients(reference, x, reference.parameters())
    assert_close(out, ref_out)
    assert_close(grad, ref_grad, atol=1e-4)
    assert_close(params["gamma"], ref_gamma, rtol=1e-4, atol=1e-4)
    assert_close(params["beta"], ref_beta, rtol=1e-4, atol=1e-4)


def test_gelu_matches_torch():
    x = sample((3, 7, 130), scale=3.0)  # values far into both tails
    gelu = cpu_kernels.GELU()
    assert gelu.fused
    out, grad, _ = ours_with_gradients(gelu, x)
    ref_out, ref_grad, _ = torch_with_gradients(torch.nn.functional.gelu, x)
    assert_close(out, ref_out)
    assert_close(grad, ref_grad)


class AttentionOf(nn.Cell):
    """qkv -> ScaledDotProductAttention(qkv), or with a trainable (heads, N, N) bias as BEiT's relative position
    bias."""

    def __init__(self, num_heads, scale, bias=None):
        super().__init__()
        self.attention = cpu_kernels.ScaledDotProductAttention(num_heads, scale)
        self.bias = None if bias is None else ms.Parameter(ms.Tensor(bias), name="bias")

    def construct(self, qkv):
        if self.bias is None:
            return self.attention(qkv)
        return self.attention(qkv, self.bias)


def torch_attention(qkv, num_heads, scale, bias=None):
    batch, tokens, width = qkv.shape
    q, k, v = qkv.reshape(batch, tokens, 3, num_heads, width // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-1, -2) * scale
    if bias is not None:
        logits = logits + bias
    return (torch.softmax(logits, -1) @ v).transpose(1, 2).flatten(2)


# a head size and token count not SIMD multiples; fewer (sample, head) pairs than threads; the fused kernels or
# MindSpore's operators; training (the probabilities kept for the backward) or eval mode (the inference kernels,
# a gradient through them recomputing the probabilities)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shape, num_heads", [((3, 17, 3 * 4 * 10), 4), ((1, 2, 3 * 1 * 16), 1)])
def test_attention_matches_torch_with_the_bias_gradient_summed_over_the_batch(shape, num_heads, with_bias, fused,
                                                                             training, request):
    if not fused:
        switch_fused_kernels_off(request)
    tokens = shape[1]
    bias = sample((num_heads, tokens, tokens), seed=1) if with_bias else None
    attention = AttentionOf(num_heads, 0.3, bias).set_train(training)
    assert attention.attention.fused == fused
    out, grad, params = ours_with_gradients(attention, sample(shape))
    reference_bias = torch.tensor(bias, requires_grad=True) if with_bias else None
    ref_out, ref_grad, ref_params = torch_with_gradients(
        lambda t: torch_attention(t, num_heads, 0.3, reference_bias), sample(shape), [reference_bias] * with_bias)
    assert_close(out, ref_out, atol=1e-5)
    assert_close(grad, ref_grad, atol=1e-5)
    if with_bias:
        assert_close(params["bias"], ref_params[0], atol=1e-5)


class ChannelScaleOf(nn.Cell):
    """x -> x * gamma with a trainable gamma, as a block's layer scale."""

    def __init__(self, gamma):
        super().__init__()
        self.gamma = ms.Parameter(ms.Tensor(gamma), name="gamma")
        self.scale = cpu_kernels.ChannelScale()

    def construct(self, x):
        return self.scale(x, self.gamma)


def test_layer_scale_matches_torch_with_the_gamma_gradient():
    x, gamma = sample((4, 70, 48)), sample((48,), seed=1)  # 280 rows: several row blocks for gamma's gradient
    scale = ChannelScaleOf(gamma)
    assert scale.scale.fused
    out, grad, params = ours_with_gradients(scale, x)
    reference_gamma = torch.tensor(gamma, requires_grad=True)
    ref_out, ref_grad, (ref_gamma,) = torch_with_gradients(lambda t: t * reference_gamma, x, [reference_gamma])
    assert_close(out, ref_out, atol=1e-6)
    assert_close(grad, ref_grad, atol=1e-6)
    assert_close(params["gamma"], ref_gamma, rtol=1e-5, atol=1e-4)


def test_layer_norm_matches_torch_with_parameter_gradients():
    x = sample((4, 70, 48))  # 280 rows: several row blocks for the weight gradients
    check_normalization(cpu_kernels.LayerNorm(48, eps=1e-6), torch.nn.LayerNorm(48, eps=1e-6), x)


# rows split over the threads (280 rows, not a multiple of the 16-row spans); columns split (3 rows, 1000
# columns: a classifier head); a square layer; no bias
@pytest.mark.parametrize("shape, out_features, has_bias", [((4, 70, 48), 24, True), ((3, 48), 1000, True),
                                                          ((2, 300, 96), 96, True), ((5, 33), 40, False)])
def test_dense_matches_torch_with_parameter_gradients(shape, out_features, has_bias):
    dense = cpu_kernels.Dense(shape[-1], out_features, has_bias=has_bias)
    assert dense.fused
    reference = torch.nn.Linear(shape[-1], out_features, bias=has_bias)
    reference.weight.data = torch.tensor(dense.weight.asnumpy())
    if has_bias:
        reference.bias.data = torch.tensor(sample((out_features,), seed=3))
        dense.bias.set_data(ms.Tensor(reference.bias.data.numpy()))
    out, grad, params = ours_with_gradients(dense, sample(shape))
    ref_out, ref_grad, ref_params = torch_with_gradients(reference, sample(shape), reference.parameters())
    assert_close(out, ref_out, atol=1e-4)
    assert_close(grad, ref_grad, atol=1e-4)
    assert_close(params["weight"], ref_params[0], rtol=1e-4, atol=1e-3)
    if has_bias:
        assert_close(params["bias"], ref_params[1], rtol=1e-4, atol=1e-4)


class TwoHeadCounts(nn.Cell):
    """The attentions of qkv taken as 2 heads and as 4 heads, added."""

    def __init__(self):
        super().__init__()
        self.two, self.four = AttentionOf(2, 0.5), AttentionOf(4, 0.5)

    def construct(self, qkv):
        return self.two(qkv) + self.four(qkv)


def test_attentions_of_different_head_counts_in_one_graph_keep_their_own_shapes():
    x = sample((2, 5, 3 * 16))
    out, grad, _ = ours_with_gradients(TwoHeadCounts(), x)
    ref_out, ref_grad, _ = torch_with_gradients(lambda t: torch_attention(t, 2, 0.5) + torch_attention(t, 4, 0.5), x)
    assert_close(out, ref_out, atol=1e-5)
    assert_close(grad, ref_grad, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_patch_token_mean_matches_torch(fused, request):
    if not fused:
        switch_fused_kernels_off(request)
    mean = cpu_kernels.PatchTokenMean()
    assert mean.fused == fused
    out, grad, _ = ours_with_gradients(mean, sample((3, 17, 40)))
    ref_out, ref_grad, _ = torch_with_gradients(lambda t: t[:, 1:].mean(1), sample((3, 17, 40)))
    assert_close(out, ref_out, atol=1e-6)
    assert_close(grad, ref_grad, atol=1e-7)


class TorchGroupNormRelu(torch.nn.GroupNorm):
    def forward(self, x):
        return torch.relu(super().forward(x))


@pytest.mark.parametrize("relu", [False, True])
def test_group_norm_matches_torch_with_parameter_gradients(relu):
    # a large mean: the one-pass variance and the gradient's cancellation are exercised
    x = sample((3, 64, 5, 7), scale=3.0, offset=4.0)
    reference = (TorchGroupNormRelu if relu else torch.nn.GroupNorm)(32, 64)
    check_normalization(cpu_kernels.GroupNorm(32, 64, relu=relu), reference, x)


@pytest.mark.parametrize("unbiased", [False, True])
def test_standardize_matches_torch(unbiased):
    x = sample((6, 9, 75))
    eps = 1e-6

    def reference(t):
        var, mean = torch.var_mean(t, dim=-1, keepdim=True, unbiased=unbiased)
        return (t - mean) / torch.sqrt(var + eps)
    out, grad, _ = ours_with_gradients(cpu_kernels.Standardize((75,), eps, unbiased=unbiased), x)
    ref_out, ref_grad, _ = torch_with_gradients(reference, x)
    assert_close(out, ref_out)
    assert_close(grad, ref_grad, atol=1e-4)


class WithConstant(nn.Cell):
    """x -> cell(x, constant), for the gradient with respect to x alone."""

    def __init__(self, cell, constant):
        super().__init__()
        self.cell = cell
        self.constant = ms.Tensor(constant)

    def construct(self, x):
        return self.cell(x, self.constant)


@pytest.mark.parametrize("fused", [True, False])
def test_row_mean_squared_error_gathered_rows_and_patches_match_torch(fused, request):
    if not fused:
        switch_fused_kernels_off(request)
    pred, target = sample((6, 9, 75)), sample((6, 9, 75), seed=1)
    squared_error = WithConstant(cpu_kernels.RowMeanSquaredError(), target)
    assert squared_error.cell.fused == fused
    out, grad, _ = ours_with_gradients(squared_error, pred)
    ref_out, ref_grad, _ = torch_with_gradients(lambda t: torch.square(t - torch.from_numpy(target)).mean(-1), pred)
    assert_close(out, ref_out)
    assert_close(grad, ref_grad)

    x = sample((3, 11, 21))
    index = np.random.default_rng(2).integers(0, 11, (3, 13)).astype(np.int32)  # repeats: their gradients add
    out, grad, _ = ours_with_gradients(WithConstant(cpu_kernels.GatherRows(), index), x)
    ref_out, ref_grad, _ = torch_with_gradients(
        lambda t: torch.gather(t, 1, torch.from_numpy(index).long()[..., None].expand(-1, -1, 21)), x)
    assert_close(out, ref_out, atol=0)
    assert_close(grad, ref_grad, atol=1e-6)

    images = sample((2, 3, 12, 20))
    patches = cpu_kernels.Patchify(4)(ms.Tensor(images)).asnumpy()
    # (N, C, h, p, w, p) -> (N, h, w, p, p, C), as MAE's einsum "nchpwq->nhwpqc"
    expected = images.reshape(2, 3, 3, 4, 5, 4).transpose(0, 2, 4, 3, 5, 1).reshape(2, 15, 48)
    assert_close(patches, expected, atol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_max_pool_over_zero_padding_matches_torch(fused, request):
    if not fused:
        switch_fused_kernels_off(request)
    x = sample((2, 3, 9, 8), offset=-1.0)  # mostly negative: the padding's zeros are often the maxima
    pool = cpu_kernels.ZeroPaddedMaxPool(3, 2, 1)
    assert pool.fused == fused
    out, grad, _ = ours_with_gradients(pool, x)
    reference = torch.nn.Sequential(torch.nn.ConstantPad2d(1, 0.0), torch.nn.MaxPool2d(3, stride=2))
    ref_out, ref_grad, _ = torch_with_gradients(reference, x)
    assert out.shape == (2, 3, 5, 4) and (out == 0).any()
    assert_close(out, ref_out, atol=0)
    assert_close(grad, ref_grad, atol=1e-6)


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (3, 1, 1), (2, 2, 0), (5, 3, 2)])
def test_fused_max_pool_takes_the_first_of_equal_values_and_nans_as_torch(kernel, stride, padding):
    x = np.random.default_rng(3).integers(-1, 2, (2, 3, 23, 37)).astype(np.float32)  # ties, zeros as the padding's
    x[0, 1, 5, 6] = x[1, 2, 0, 0] = x[1, 0, 22, 36] = np.nan
    out, grad, _ = ours_with_gradients(cpu_kernels.ZeroPaddedMaxPool(kernel, stride, padding), x)
    reference = torch.nn.Sequential(torch.nn.ConstantPad2d(padding, 0.0), torch.nn.MaxPool2d(kernel, stride=stride))
    ref_out, ref_grad, _ = torch_with_gradients(reference, x)
    assert np.isnan(out).any()
    assert_close(out, ref_out, atol=0)
    assert_close(grad, ref_grad, atol=1e-6)


def test_gathered_rows_outside_the_tokens_fail_the_step():
    with pytest.raises(RuntimeError, match="GatherRowsForward"):
        cpu_kernels.GatherRows()(ms.Tensor(sample((2, 4, 8))), ms.Tensor(np.array([[0, 4], [1, 2]], np.int32)))


@pytest.mark.parametrize("onednn", ["1", "0"])  # k x k kernels: oneDNN's primitives, or im2col + sgemm
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (7, 2, 3), (1, 2, 0), (2, 2, 0),
                                                     (1, 1, 0)])
def test_fused_convolution_matches_torch(kernel, stride, padding, onednn, monkeypatch):
    monkeypatch.setenv("CPU_CONV_ONEDNN", onednn)
    conv = Conv2d(5, 6, kernel, stride=stride, pad_mode="pad" if padding else "valid", padding=padding)
    assert conv.fused_conv is not None and not conv.as_matmul
    reference = torch.nn.Conv2d(5, 6, kernel, stride=stride, padding=padding, bias=False)
    reference.weight.data = torch.tensor(conv.weight.asnumpy())
    x = sample((3, 5, 11, 13))
    out, grad, params = ours_with_gradients(conv, x)
    ref_out, ref_grad, (ref_weight,) = torch_with_gradients(reference, x, reference.parameters())
    assert_close(out, ref_out, atol=1e-4)
    assert_close(grad, ref_grad, atol=1e-4)
    assert_close(params["weight"], ref_weight, rtol=1e-4, atol=1e-3)


def test_a_convolution_without_input_gradient_gives_zeros_and_the_weight_gradient():
    conv = Conv2d(3, 8, 4, stride=4, pad_mode="valid", input_grad=False)
    reference = torch.nn.Conv2d(3, 8, 4, stride=4, bias=False)
    reference.weight.data = torch.tensor(conv.weight.asnumpy())
    x = sample((2, 3, 16, 16))
    out, grad, params = ours_with_gradients(conv, x)
    ref_out, _, (ref_weight,) = torch_with_gradients(reference, x, reference.parameters())
    assert_close(out, ref_out, atol=1e-4)
    assert not grad.any()
    assert_close(params["weight"], ref_weight, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kernel, stride, padding", [(4, 4, 0), (3, 2, 1), (1, 1, 0)])
def test_a_convolution_writing_tokens_matches_torch(kernel, stride, padding):
    conv = Conv2d(5, 6, kernel, stride=stride, pad_mode="pad" if padding else "valid", padding=padding, tokens=True)
    assert conv.fused_conv is not None
    reference = torch.nn.Conv2d(5, 6, kernel, stride=stride, padding=padding, bias=False)
    reference.weight.data = torch.tensor(conv.weight.asnumpy())
    x = sample((3, 5, 12, 12))
    out, grad, params = ours_with_gradients(conv, x)
    ref_out, ref_grad, (ref_weight,) = torch_with_gradients(lambda t: reference(t).flatten(2).transpose(1, 2), x,
                                                            reference.parameters())
    assert_close(out, ref_out, atol=1e-4)
    assert_close(grad, ref_grad, atol=1e-4)
    assert_close(params["weight"], ref_weight, rtol=1e-4, atol=1e-3)


def test_disabled_kernels_fall_back_to_mindspore_with_the_same_results(request):
    x = sample((2, 32, 6, 6))

    def cells():
        return [cpu_kernels.GroupNorm(8, 32), Conv2d(32, 8, 3, pad_mode="pad", padding=1), cpu_kernels.GELU(),
                Conv2d(32, 8, 2, stride=2, pad_mode="valid", tokens=True), cpu_kernels.GroupNorm(8, 32, relu=True),
                cpu_kernels.Dense(6, 10), ChannelScaleOf(sample((6,)))]
    fused = cells()
    switch_fused_kernels_off(request)
    native = cells()
    assert not native[0].fused and native[1].fused_conv is None and native[1].as_matmul and not native[2].fused
    assert native[3].fused_conv is None and not native[5].fused and not native[6].scale.fused
    for index in (1, 3, 5):
        native[index].weight.set_data(fused[index].weight.value())
    native[5].bias.set_data(fused[5].bias.value())
    for mine, theirs in zip(fused, native):
        out, grad, params = ours_with_gradients(mine, x)
        ref_out, ref_grad, ref_params = ours_with_gradients(theirs, x)
        assert_close(out, ref_out, atol=1e-5)
        assert_close(grad, ref_grad, atol=1e-4)
        for name in params:
            assert_close(params[name], ref_params[name], rtol=1e-4, atol=1e-3)


def test_a_failed_compile_warns_once_falls_back_and_leaves_no_partial_library(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu_kernels, "COMPILE_FLAGS", cpu_kernels.COMPILE_FLAGS + ["-fno-such-flag"])
    cpu_kernels.library_path.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
            assert not cpu_kernels.fused_kernels_enabled()
            assert not cpu_kernels.GELU().fused
        assert len(caplog.records) == 1
        assert "compiling" in caplog.text and "cpu_kernels.cc" in caplog.text and "no-such-flag" in caplog.text
        assert not list(tmp_path.rglob("*.so"))
    finally:
        cpu_kernels.library_path.cache_clear()


WEIGHT_GRADIENTS_SCRIPT = """
import os, sys
import numpy as np
import mindspore as ms
from mindspore import ops
sys.path.insert(0, {root!r})
from src.ops import cpu_kernels
from src.ops.conv import Conv2d
ms.set_context(mode=ms.GRAPH_MODE)
rng = np.random.default_rng(0)
results = []


class BiasedAttention(ms.nn.Cell):
    def __init__(self):
        super().__init__()
        self.attention = cpu_kernels.ScaledDotProductAttention(4, 0.25)
        self.bias = ms.Parameter(ms.Tensor(rng.standard_normal((4, 17, 17)).astype(np.float32)), name="bias")

    def construct(self, qkv):
        return self.attention(qkv, self.bias)


cells = ((cpu_kernels.LayerNorm(96), (2, 300, 96)), (cpu_kernels.GroupNorm(4, 64), (6, 64, 12, 12)),
         (cpu_kernels.Dense(96, 96), (2, 300, 96)), (Conv2d(8, 8, 3, pad_mode="pad", padding=1), (8, 8, 40, 40)),
         (BiasedAttention(), (6, 17, 96)))
for cell, shape in cells:
    x = ms.Tensor(rng.standard_normal(shape).astype(np.float32))
    grads = ops.GradOperation(get_by_list=True)(cell, cell.trainable_params())(x)
    results += [grad.asnumpy() for grad in grads]
np.savez(sys.argv[1], *results)
"""


def test_weight_gradients_do_not_depend_on_the_thread_count(tmp_path):
    """Fixed row blocks make the LayerNorm / GroupNorm / bias gradients bit-identical on 1 or 2 cores, each
    element of the Dense weight's gradient comes from one thread, and the attention's bias gradient is summed over
    the batch in order; the convolution's weight gradient is summed per thread, so it may differ in the last bits
    only."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPU cores")
    script = tmp_path / "weight_gradients.py"
    script.write_text(WEIGHT_GRADIENTS_SCRIPT.format(root=ROOT))
    outputs = {}
    for cores in (1, 2):
        outputs[cores] = tmp_path / f"cores{cores}.npz"
        cpus = sorted(os.sched_getaffinity(0))[:cores]
        subprocess.run([sys.executable, str(script), str(outputs[cores])], check=True, capture_output=True,
                       env=dict(os.environ, GLOG_v="3"), cwd=tmp_path,
                       preexec_fn=lambda cpus=cpus: os.sched_setaffinity(0, cpus))
    one, two = np.load(outputs[1]), np.load(outputs[2])
    grads = [(one[f"arr_{index}"], two[f"arr_{index}"]) for index in range(len(one.files))]
    # LayerNorm gamma, beta; GroupNorm gamma, beta; the Dense weight and bias: bit-identical
    for index in (0, 1, 2, 3, 4, 5):
        np.testing.assert_array_equal(*grads[index], err_msg=f"gradient {index}")
    # the convolution's weight (oneDNN's, summed over 12800 products in an order that depends on the span of
    # samples): equal to float32 rounding
    np.testing.assert_allclose(*grads[6], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(*grads[7], err_msg="the attention's bias")


OTHER_TARGET_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import mindspore as ms
import numpy as np
import torch
from src.ops import cpu_kernels
x = np.random.default_rng(0).standard_normal((4, 197, 130)).astype(np.float32) * 3
out = cpu_kernels.GELU()(ms.Tensor(x)).asnumpy()
print(float(np.abs(out - torch.nn.functional.gelu(torch.from_numpy(x)).numpy()).max()))
print(cpu_kernels.library_path("cpu_kernels"))
"""


def vector_registers(library):
    """Which of the AVX (ymm) and AVX-512 (zmm) registers the library's code uses."""
    code = subprocess.run(["objdump", "-d", library], check=True, capture_output=True, text=True).stdout
    return {register for register in ("ymm", "zmm") if register in code}


def test_kernels_compile_for_another_target(tmp_path):
    """FUSED_CPU_KERNELS_MARCH=haswell (bench/train_step.py --isa avx2) builds the kernels' AVX2 code, without an
    AVX-512 register in it, as a library of its own whose GELU still matches torch's."""
    if shutil.which("objdump") is None:
        pytest.skip("needs objdump")
    script = tmp_path / "other_target.py"
    script.write_text(OTHER_TARGET_SCRIPT.format(root=ROOT))
    environment = dict(os.environ, GLOG_v="3", XDG_CACHE_HOME=str(tmp_path), FUSED_CPU_KERNELS_MARCH="haswell")
    done = subprocess.run([sys.executable, str(script)], check=True, capture_output=True, text=True, cwd=tmp_path,
                          env=environment)
    error, library = done.stdout.split()[-2:]
    assert float(error) < 1e-5
    native = cpu_kernels.library_path("cpu_kernels")
    assert os.path.basename(library) != os.path.basename(native)  # another build, cached apart
    assert vector_registers(library) == {"ymm"}
    if "avx512f" in cpu_kernels._machine_signature().split():  # the native build of the same source uses them here
        assert "zmm" in vector_registers(native)


def test_pynative_mode_keeps_each_convolution_geometry_apart():
    """PyNative caches Custom ops by their attributes: each geometry must be its own op."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        x = sample((2, 5, 11, 11))
        for stride, padding in ((1, 1), (2, 1), (2, 0)):
            conv = Conv2d(5, 4, 3, stride=stride, pad_mode="pad" if padding else "valid", padding=padding)
            reference = torch.nn.Conv2d(5, 4, 3, stride=stride, padding=padding, bias=False)
            reference.weight.data = torch.tensor(conv.weight.asnumpy())
            assert_close(conv(ms.Tensor(x)).asnumpy(), reference(torch.tensor(x)).detach().numpy(), atol=1e-4)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_pynative_mode_runs_attention_in_training_and_in_eval_mode():
    """The inference kernels (eval mode) give the training kernels' output bit for bit, in one PyNative process."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        qkv = sample((3, 17, 3 * 4 * 10))
        for bias in (None, sample((4, 17, 17), seed=1)):
            attention = AttentionOf(4, 0.3, bias)
            outputs = [attention.set_train(training)(ms.Tensor(qkv)).asnumpy() for training in (True, False)]
            np.testing.assert_array_equal(outputs[0], outputs[1])
            reference = torch_attention(torch.tensor(qkv), 4, 0.3, None if bias is None else torch.tensor(bias))
            assert_close(outputs[1], reference.numpy(), atol=1e-5)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_squared_sum_over_several_blocks_and_non_finite_values():
    squared_sum = cpu_kernels.squared_sum_op()
    x = sample((3, 70001))  # 210003 elements: four blocks, the last one partial
    assert abs(squared_sum(ms.Tensor(x)).asnumpy()[0] - (x.astype(np.float64) ** 2).sum()) <= 1e-6 * (x ** 2).sum()
    x[1, 5] = 1e20  # finite, but its square is not in float32
    assert np.isinf(squared_sum(ms.Tensor(x)).asnumpy()[0])
    x[1, 5] = np.nan
    assert np.isnan(squared_sum(ms.Tensor(x)).asnumpy()[0])
