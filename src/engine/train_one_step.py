"""The train step: loss scaling (fixed or dynamic), gradient reduction, overflow skip, clipping, EMA; and
gradient accumulation over micro-batches."""
import mindspore as ms
from mindspore import nn, ops

from src.engine.ema import EMA
from src.ops.cpu_kernels import squared_sum_op
from src.optim.optimizer import ScaledGradientsOptimizer, scale_gradients

_accumulate = ops.MultitypeFuncGraph("accumulate")
STOP_REQUESTED = "stop_requested"  # run state, not model state: never saved or loaded


@_accumulate.register("Tensor", "Tensor", "Tensor")
def _accumulate_tensor(keep, accumulated, grad):
    return ops.assign(accumulated, accumulated * keep.astype(accumulated.dtype) + grad.astype(accumulated.dtype))


class TrainOneStepCell(nn.TrainOneStepWithLossScaleCell):
    """One optimizer step with options rather than one class per combination.

    Order: scaled backward -> gradient all-reduce -> overflow check -> unscale and global-norm
    clip -> optimizer -> EMA. On overflow (a non-finite gradient) the step is skipped, and a
    dynamic loss scale is lowered. The overflow check is whether the scaled gradients' global norm
    is finite (the stock NPU/GPU status ops do not exist on the CPU, and `isfinite` over every
    gradient took ~10% of a CPU step); the clip reuses that norm, divided by the scale, and the
    unscale and the clip are one multiplication of each gradient. Scaled gradients too large to
    square in float32 (a norm > 1e19) also count as an overflow.

    `stop_requested` (set to 1 by a rank that was asked to stop) travels in the overflow flag's all-reduce,
    so every rank learns at the same step that one of them must stop, at no extra collective.
    Returns (loss, overflow, loss scale, stop: some rank asked to stop).

    `scale_sense`: a Tensor for a fixed loss scale, or `nn.DynamicLossScaleUpdateCell`.
    """

    def __init__(self, network, optimizer, scale_sense, clip_global_norm=None, ema_decay=None):
        super().__init__(network, optimizer, scale_sense)
        self.use_clip = clip_global_norm is not None
        self.clip_global_norm = float(clip_global_norm) if self.use_clip else 1.0
        self.optimizer_scales = isinstance(optimizer, ScaledGradientsOptimizer)  # the unscale and clip, fused
        self.use_ema = ema_decay is not None
        if self.use_ema:
            self.ema = EMA(self.weights, ema_decay)
        self.stop_requested = ms.Parameter(ms.Tensor(0.0, ms.float32), name=STOP_REQUESTED, requires_grad=False)
        if self.reducer_flag:
            self.flags_all_reduce = ops.AllReduce()
        # MindSpore's CPU ReduceSum took ~30 ms of a tiny BiT's 360 ms step for the norm alone
        self.fused_squared_sum = squared_sum_op()

    def squared_sum(self, grad):
        if self.fused_squared_sum is not None and grad.dtype == ms.float32:
            return self.fused_squared_sum(grad).reshape(())
        return ops.square(grad.astype(ms.float32)).sum()

    def overflow_and_stop(self, global_norm):
        """(gradients not finite on some rank, some rank asked to stop)."""
        flags = ops.stack([ops.logical_not(ops.isfinite(global_norm)).astype(ms.float32), self.stop_requested.value()])
        if self.reducer_flag:
            flags = self.flags_all_reduce(flags)
        return flags[0] > 0, flags[1] > 0

    def scaled_gradients(self, *inputs):
        """(loss, gradients of loss x scale) of one batch."""
        loss = self.network(*inputs)
        sens = ops.fill(loss.dtype, loss.shape, 1.0) * self.scale_sense.astype(loss.dtype)
        return loss, self.grad(self.network, self.weights)(*inputs, sens)

    def construct(self, *inputs):
        loss, grads = self.scaled_gradients(*inputs)
        return self.apply_gradients(loss, grads)

    def apply_gradients(self, loss, grads, micro_batches=1):
        """The optimizer step from scaled gradients summed over `micro_batches` batches (their mean is the
        gradient of the whole batch)."""
        # the scale the gradients were computed with, read before process_loss_scale may raise it
        factor = ops.reciprocal(self.scale_sense.astype(ms.float32) * micro_batches)
        grads = self.grad_reducer(grads)
        scaled_norm = ops.sqrt(ops.stack([self.squared_sum(grad) for grad in grads]).sum())
        overflow, stop = self.overflow_and_stop(scaled_norm)
        overflow = self.process_loss_scale(overflow)
        if not overflow:
            if self.use_clip:
                global_norm = scaled_norm * factor
                factor = factor * self.clip_global_norm / ops.maximum(global_norm, self.clip_global_norm)
            if self.optimizer_scales:
                loss = ops.depend(loss, self.optimizer(grads, factor))
            else:
                loss = ops.depend(loss, self.optimizer(scale_gradients(self.hyper_map, factor, grads)))
            if self.use_ema:
                loss = ops.depend(loss, self.ema())
        return loss, overflow, self.scale_sense, stop


class MicroBatchGradients(nn.Cell):
    """Adds one micro-batch's scaled gradients to `accumulated` (`keep` 0 restarts the sum)."""

    def __init__(self, step):
        super().__init__(auto_prefix=False)
        self.step = step
        self.accumulated = step.weights.clone(prefix="accumulated", init="zeros")
        self.hyper_map = ops.HyperMap()

    def construct(self, keep, *inputs):
        loss, grads = self.step.scaled_gradients(*inputs)
        return ops.depend(loss, self.hyper_map(ops.partial(_accumulate, keep), self.accumulated, grads))


class AccumulatedUpdate(nn.Cell):
    """The optimizer step of `step` from the gradients `micro` accumulated over `micro_batches` batches."""

    def __init__(self, step, micro, micro_batches):
        super().__init__(auto_prefix=False)
        self.step = step
        self.accumulated = micro.accumulated
        self.micro_batches = micro_batches

    def construct(self, loss):
        return self.step.apply_gradients(loss, self.accumulated, self.micro_batches)


class GradientAccumulation:
    """One optimizer step of `train_cell` per call, computed over `accum_steps` micro-batches: the batch
    (accum_steps x b rows, as the dataset delivers it) is split into micro-batches of b whose gradients are
    summed; the all-reduce, overflow check, loss-scale update, clip, optimizer and EMA then run once. Only one
    micro-batch's activations are alive at a time. Returns what the train cell returns, with the loss the mean
    of the micro-batches'."""

    def __init__(self, train_cell, accum_steps):
        self.train_cell = train_cell
        self.accum_steps = accum_steps
        self.micro = MicroBatchGradients(train_cell)
        self.update = AccumulatedUpdate(train_cell, self.micro, accum_steps)
        self.restart, self.add = ms.Tensor(0.0, ms.float32), ms.Tensor(1.0, ms.float32)

    def set_train(self, mode=True):
        self.train_cell.set_train(mode)
        return self

    def __call__(self, *batch):
        rows = batch[0].shape[0] // self.accum_steps
        loss_sum = 0.0
        for index in range(self.accum_steps):
            micro_batch = [column[index * rows:(index + 1) * rows] for column in batch]
            loss_sum = loss_sum + self.micro(self.add if index else self.restart, *micro_batch)
        return self.update(loss_sum / self.accum_steps)


def with_accumulation(train_cell, accum_steps):
    """What the loop calls each optimizer step: the train cell itself, or its GradientAccumulation."""
    return train_cell if accum_steps == 1 else GradientAccumulation(train_cell, accum_steps)


def create_train_step(args, network_with_loss, optimizer):
    """The train step the config asks for (loss scale kind, clipping, EMA)."""
    if args.is_dynamic_loss_scale:
        scale_sense = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(args.loss_scale), scale_factor=2,
                                                    scale_window=args.scale_window)
    else:
        scale_sense = ms.Tensor(float(args.loss_scale), ms.float32)
    return TrainOneStepCell(network_with_loss, optimizer, scale_sense,
                            clip_global_norm=args.clip_global_norm_value if args.use_global_norm else None,
                            ema_decay=args.ema_decay if args.enable_ema else None)
