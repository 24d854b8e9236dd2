"""src/ops/conv.py: the CPU convolution (fused kernels, or unfold + matmul where they are disabled) equals
MindSpore's own, forward and backward."""
import mindspore as ms
import numpy as np
import pytest
from conftest import switch_fused_kernels_off
from mindspore import nn, ops

from src.ops.conv import Conv2d


class SumOf(nn.Cell):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def construct(self, x):
        out = self.cell(x)  # weighted, so that every output position's gradient differs
        return (out * ops.arange(out.size).reshape(out.shape).astype(x.dtype)).sum()


def gradients(cell, x):
    with_sum = SumOf(cell)
    return ops.GradOperation(get_all=True, get_by_list=True)(with_sum, with_sum.trainable_params())(x)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kernel, stride, padding, bias", [(3, 1, 1, False), (3, 2, 1, True), (7, 2, 3, False),
                                                           (1, 2, 0, True), (2, 2, 0, True), (1, 1, 0, False)])
def test_matches_the_native_convolution(kernel, stride, padding, bias, fused, request):
    if not fused:
        switch_fused_kernels_off(request)
    pad_mode = "pad" if padding else "valid"
    ours = Conv2d(5, 4, kernel, stride=stride, pad_mode=pad_mode, padding=padding, has_bias=bias)
    native = nn.Conv2d(5, 4, kernel, stride=stride, pad_mode=pad_mode, padding=padding, has_bias=bias)
    native.weight.set_data(ours.weight.value())
    if bias:
        ours.bias.set_data(ms.Tensor(np.arange(4, dtype=np.float32)))
        native.bias.set_data(ours.bias.value())
    assert (ours.fused_conv is not None) == fused
    assert ours.as_matmul == (not fused and (kernel, stride) != (1, 1))
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 5, 11, 11)).astype(np.float32))
    np.testing.assert_allclose(ours(x).asnumpy(), native(x).asnumpy(), atol=1e-5)
    (ours_input,), ours_params = gradients(ours, x)
    (native_input,), native_params = gradients(native, x)
    np.testing.assert_allclose(ours_input.asnumpy(), native_input.asnumpy(), rtol=1e-5, atol=1e-4)
    for mine, theirs in zip(ours_params, native_params):
        np.testing.assert_allclose(mine.asnumpy(), theirs.asnumpy(), rtol=1e-5, atol=1e-3)
