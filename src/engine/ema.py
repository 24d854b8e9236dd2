"""Exponential moving average of the weights, updated inside the train step."""
import mindspore as ms
from mindspore import nn, ops

from src.ops.cpu_kernels import ema_update_op
from src.weights.checkpoint import EMA_PREFIX

_ema_update = ops.MultitypeFuncGraph("ema_update")
_fused_ema_update = ops.MultitypeFuncGraph("fused_ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_update_tensor(decay, ema_weight, weight):
    return ops.assign(ema_weight, decay * ema_weight + (1.0 - decay) * weight.astype(ema_weight.dtype))


@_fused_ema_update.register("Function", "Tensor", "Tensor", "Tensor")
def _fused_ema_update_tensor(update, decay, ema_weight, weight):
    if ema_weight.dtype == ms.float32 and weight.dtype == ms.float32:
        return update(ema_weight, weight, decay)
    return _ema_update_tensor(decay, ema_weight, weight)


class EMA(nn.Cell):
    """Holds `ema.<name>` copies of `weights`; calling it applies ema = decay * ema + (1 - decay) * w (on the CPU
    in one fused pass per weight: MindSpore's three ops and an assign took ~3% of a BiT-R50 step)."""

    def __init__(self, weights, decay):
        super().__init__()
        self.decay = ms.Tensor(decay, ms.float32)
        self.weights = weights
        self.ema_weights = weights.clone(prefix=EMA_PREFIX.rstrip("."), init="same")
        self.hyper_map = ops.HyperMap()
        self.fused_update = ema_update_op()

    def construct(self):
        if self.fused_update is None:
            return self.hyper_map(ops.partial(_ema_update, self.decay), self.ema_weights, self.weights)
        return self.hyper_map(ops.partial(_fused_ema_update, self.fused_update, self.decay), self.ema_weights,
                              self.weights)
