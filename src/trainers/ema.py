"""Exponential moving average of the weights, updated inside the train step."""
import mindspore as ms
from mindspore import nn, ops

from src.tools.checkpoint import EMA_PREFIX

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Tensor", "Tensor", "Tensor")
def _ema_update_tensor(decay, ema_weight, weight):
    return ops.assign(ema_weight, decay * ema_weight + (1.0 - decay) * weight.astype(ema_weight.dtype))


class EMA(nn.Cell):
    """Holds `ema.<name>` copies of `weights`; calling it applies ema = decay * ema + (1 - decay) * w."""

    def __init__(self, weights, decay):
        super().__init__()
        self.decay = ms.Tensor(decay, ms.float32)
        self.weights = weights
        self.ema_weights = weights.clone(prefix=EMA_PREFIX.rstrip("."), init="same")
        self.hyper_map = ops.HyperMap()

    def construct(self):
        return self.hyper_map(ops.partial(_ema_update, self.decay), self.ema_weights, self.weights)
