"""The train-one-step cell: loss scaling, overflow skip, global-norm clipping, EMA."""
import mindspore as ms
import numpy as np
import pytest
from conftest import switch_fused_kernels_off
from mindspore import nn

from src.engine.train_one_step import TrainOneStepCell

ms.set_context(mode=ms.GRAPH_MODE)

W0 = np.array([1.0, -2.0, 0.5], np.float32)
B0 = np.array([0.25], np.float32)


class LinearLoss(nn.Cell):
    """loss = sum(w * x) + 3 * b * sum(y): the gradients are x.sum(0) and 3 * y.sum()."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(W0), name="w")
        self.b = ms.Parameter(ms.Tensor(B0), name="b")

    def construct(self, x, y):
        return (self.w * x).sum() + 3.0 * (self.b * y).sum()


def make_step(scale=1024.0, dynamic=False, clip=None, ema=None, lr=0.1):
    net = LinearLoss()
    optimizer = nn.SGD(net.trainable_params(), learning_rate=lr)
    scale_sense = (nn.DynamicLossScaleUpdateCell(loss_scale_value=scale, scale_factor=2, scale_window=1000)
                   if dynamic else ms.Tensor(scale, ms.float32))
    return net, TrainOneStepCell(net, optimizer, scale_sense, clip_global_norm=clip, ema_decay=ema)


def inputs(x, y):
    return ms.Tensor(np.asarray(x, np.float32)), ms.Tensor(np.asarray(y, np.float32))


@pytest.mark.parametrize("dynamic", [False, True])
def test_scaled_gradients_are_unscaled_before_the_update(dynamic):
    net, step = make_step(scale=1024.0, dynamic=dynamic)
    x, y = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], [[2.0]]
    loss, overflow, scale, _ = step(*inputs(x, y))
    assert not bool(overflow.asnumpy()) and float(scale.asnumpy()) == 1024.0
    assert float(loss.asnumpy()) == pytest.approx((W0 * np.array(x)).sum() + 3 * B0[0] * 2.0, rel=1e-6)
    np.testing.assert_allclose(net.w.asnumpy(), W0 - 0.1 * np.array(x).sum(0), rtol=1e-6)
    np.testing.assert_allclose(net.b.asnumpy(), B0 - 0.1 * 3 * 2.0, rtol=1e-6)


def test_the_step_runs_in_pynative_mode(request):
    """`graph_mode: False` trains through the same cell (PyNative refused to stack the stop flag, a Parameter)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    request.addfinalizer(lambda: ms.set_context(mode=ms.GRAPH_MODE))
    net, step = make_step(scale=1024.0, dynamic=True, clip=10.0, ema=0.9)  # the norm, 7.5, is not clipped
    x, y = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], [[2.0]]
    _, overflow, _, stop = step(*inputs(x, y))
    assert not bool(overflow.asnumpy()) and not bool(stop.asnumpy())
    new_w = W0 - 0.1 * np.array(x).sum(0)
    np.testing.assert_allclose(net.w.asnumpy(), new_w, rtol=1e-6)
    # the fused EMA update writes its parameter in place in PyNative as in graph mode
    np.testing.assert_allclose(step.ema.ema_weights[0].asnumpy(), 0.9 * W0 + 0.1 * new_w, rtol=1e-6)


def test_overflow_skips_the_step_and_lowers_a_dynamic_scale():
    net, step = make_step(scale=1024.0, dynamic=True)
    _, overflow, _, _ = step(*inputs([[np.inf, 1.0, 1.0]], [[1.0]]))
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(net.w.asnumpy(), W0)
    np.testing.assert_array_equal(net.b.asnumpy(), B0)
    assert float(step.scale_sense.asnumpy()) == 512.0
    _, overflow, scale, _ = step(*inputs([[1.0, 1.0, 1.0]], [[1.0]]))  # the next finite step goes through
    assert not bool(overflow.asnumpy()) and float(scale.asnumpy()) == 512.0
    np.testing.assert_allclose(net.w.asnumpy(), W0 - 0.1, rtol=1e-6)


def test_overflow_with_a_fixed_scale_skips_and_keeps_the_scale():
    net, step = make_step(scale=128.0, dynamic=False)
    _, overflow, _, _ = step(*inputs([[np.nan, 1.0, 1.0]], [[1.0]]))
    assert bool(overflow.asnumpy()) and float(step.scale_sense.asnumpy()) == 128.0
    np.testing.assert_array_equal(net.w.asnumpy(), W0)


def test_a_gradient_too_large_to_square_in_float32_counts_as_an_overflow():
    """The overflow check is a finite global norm: a finite 1e20 gradient squares to inf and is skipped."""
    net, step = make_step(scale=4.0, dynamic=True)
    _, overflow, _, _ = step(*inputs([[1e20, 1.0, 1.0]], [[1.0]]))
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(net.w.asnumpy(), W0)
    _, overflow, scale, _ = step(*inputs([[1e17, 1.0, 1.0]], [[1.0]]))  # squares to 1e34 < float32's max
    assert not bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0 and net.w.asnumpy()[0] < -9e15


def test_global_norm_clipping_scales_all_gradients_together():
    net, step = make_step(clip=1.0, lr=1.0)
    x, y = [[3.0, 0.0, 4.0]], [[4.0]]
    grads = [np.array(x).sum(0), np.array([3 * 4.0])]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))  # 13
    step(*inputs(x, y))
    np.testing.assert_allclose(net.w.asnumpy(), W0 - grads[0] / norm, rtol=1e-5)
    np.testing.assert_allclose(net.b.asnumpy(), B0 - grads[1] / norm, rtol=1e-5)
    # below the threshold gradients pass unchanged
    net, step = make_step(clip=100.0, lr=1.0)
    step(*inputs(x, y))
    np.testing.assert_allclose(net.w.asnumpy(), W0 - grads[0], rtol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_ema_follows_the_weights_and_skips_with_the_step(fused, request):
    if not fused:
        switch_fused_kernels_off(request)
    decay = 0.9
    net, step = make_step(ema=decay, dynamic=True)
    assert (step.ema.fused_update is not None) == fused
    ema = {"w": W0.copy(), "b": B0.copy()}
    for x in ([[1.0, 2.0, 3.0]], [[-1.0, 0.5, 2.0]], [[np.inf, 0.0, 0.0]], [[0.5, 0.5, 0.5]]):
        step(*inputs(x, [[1.0]]))
        if np.isfinite(x).all():
            ema = {name: decay * ema[name] + (1 - decay) * getattr(net, name).asnumpy() for name in ema}
    ema_params = {p.name: p.asnumpy() for p in step.ema.ema_weights}
    assert set(ema_params) == {"ema.w", "ema.b"}
    np.testing.assert_allclose(ema_params["ema.w"], ema["w"], rtol=1e-6)
    np.testing.assert_allclose(ema_params["ema.b"], ema["b"], rtol=1e-6)
