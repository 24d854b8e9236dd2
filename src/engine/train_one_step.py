"""The train step: loss scaling (fixed or dynamic), gradient reduction, overflow skip, clipping, EMA."""
import mindspore as ms
from mindspore import nn, ops

from src.engine.ema import EMA
from src.ops.cpu_kernels import squared_sum_op

_scale = ops.MultitypeFuncGraph("scale")


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * factor.astype(grad.dtype)


class TrainOneStepCell(nn.TrainOneStepWithLossScaleCell):
    """One optimizer step with options rather than one class per combination.

    Order: scaled backward -> gradient all-reduce -> overflow check -> unscale and global-norm
    clip -> optimizer -> EMA. On overflow (a non-finite gradient) the step is skipped, and a
    dynamic loss scale is lowered. The overflow check is whether the scaled gradients' global norm
    is finite (the stock NPU/GPU status ops do not exist on the CPU, and `isfinite` over every
    gradient took ~10% of a CPU step); the clip reuses that norm, divided by the scale, and the
    unscale and the clip are one multiplication of each gradient. Scaled gradients too large to
    square in float32 (a norm > 1e19) also count as an overflow. Returns (loss, overflow, loss scale).

    `scale_sense`: a Tensor for a fixed loss scale, or `nn.DynamicLossScaleUpdateCell`.
    """

    def __init__(self, network, optimizer, scale_sense, clip_global_norm=None, ema_decay=None):
        super().__init__(network, optimizer, scale_sense)
        self.use_clip = clip_global_norm is not None
        self.clip_global_norm = float(clip_global_norm) if self.use_clip else 1.0
        self.use_ema = ema_decay is not None
        if self.use_ema:
            self.ema = EMA(self.weights, ema_decay)
        if self.reducer_flag:
            self.overflow_all_reduce = ops.AllReduce()
        # MindSpore's CPU ReduceSum took ~30 ms of a tiny BiT's 360 ms step for the norm alone
        self.fused_squared_sum = squared_sum_op()

    def squared_sum(self, grad):
        if self.fused_squared_sum is not None and grad.dtype == ms.float32:
            return self.fused_squared_sum(grad).reshape(())
        return ops.square(grad.astype(ms.float32)).sum()

    def gradients_overflow(self, global_norm):
        overflow = ops.logical_not(ops.isfinite(global_norm))
        if self.reducer_flag:
            overflow = self.overflow_all_reduce(overflow.astype(ms.float32)) > 0
        return overflow

    def construct(self, *inputs):
        loss = self.network(*inputs)
        scale = self.scale_sense
        sens = ops.fill(loss.dtype, loss.shape, 1.0) * scale.astype(loss.dtype)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        scaled_norm = ops.sqrt(ops.stack([self.squared_sum(grad) for grad in grads]).sum())
        overflow = self.process_loss_scale(self.gradients_overflow(scaled_norm))
        if not overflow:
            factor = ops.reciprocal(scale.astype(ms.float32))
            if self.use_clip:
                global_norm = scaled_norm * factor
                factor = factor * self.clip_global_norm / ops.maximum(global_norm, self.clip_global_norm)
            grads = self.hyper_map(ops.partial(_scale, factor), grads)
            loss = ops.depend(loss, self.optimizer(grads))
            if self.use_ema:
                loss = ops.depend(loss, self.ema())
        return loss, overflow, scale


def create_train_step(args, network_with_loss, optimizer):
    """The train step the config asks for (loss scale kind, clipping, EMA)."""
    if args.is_dynamic_loss_scale:
        scale_sense = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(args.loss_scale), scale_factor=2,
                                                    scale_window=1000)
    else:
        scale_sense = ms.Tensor(float(args.loss_scale), ms.float32)
    return TrainOneStepCell(network_with_loss, optimizer, scale_sense,
                            clip_global_norm=args.clip_global_norm_value if args.use_global_norm else None,
                            ema_decay=args.ema_decay if args.enable_ema else None)
