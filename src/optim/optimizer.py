"""Optimizers: SGD with momentum (torch.optim.SGD semantics), RMSProp (TensorFlow's), AdamW (torch.optim.AdamW
semantics) and LARS."""
import mindspore as ms
import numpy as np
from mindspore import nn, ops

from src.errors import UserInputError
from src.ops.cpu_kernels import adamw_update_op, momentum_update_op, rmsprop_update_op

OPTIMIZERS = ("momentum", "sgd", "rmsprop", "adamw", "lars")

def as_groups(params):
    """Parameters as a list of groups: per-parameter weight decays keep construct to one code path."""
    params = list(params)
    return params if isinstance(params[0], dict) else [{"params": params}]


_scale = ops.MultitypeFuncGraph("scale")


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * factor.astype(grad.dtype)


def scale_gradients(hyper_map, factor, gradients):
    """Each gradient times `factor` (a scalar tensor)."""
    return hyper_map(ops.partial(_scale, factor), gradients)


def all_float32(params):
    """Whether the fused updates (float32 only) can serve these parameters (and their gradients, of the same type)."""
    return all(param.dtype == ms.float32 for param in params)


class ScaledGradientsOptimizer(nn.Optimizer):
    """An optimizer called with the gradients and the factor they are to be multiplied by first (the train step's
    unscale and clip), as `optimizer(gradients, grad_scale)`: its fused update (`fused_update_op()`, a CPU kernel
    that serves float32 parameters; None elsewhere) reads each gradient once instead of after a pass that scales it.
    Learning rates and weight decays may differ per parameter group."""

    def __init__(self, params, learning_rate, weight_decay, fused_update_op):
        super().__init__(learning_rate, as_groups(params), weight_decay)
        self.fused_update = fused_update_op() if all_float32(self._parameters) else None
        self.one = ms.Tensor(1.0, ms.float32)

    def step_rates(self, grad_scale):
        """Counts this step; (its learning rate per parameter, weight decay per parameter, gradient scale)."""
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if not self.is_group_lr:
            lr = (lr,) * len(self._parameters)  # one learning rate for every parameter
        return lr, weight_decay, self.one if grad_scale is None else grad_scale.astype(ms.float32)


_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor")
def _adamw_update_tensor(beta1, beta2, eps, bias_correction1, bias_correction2, lr, weight_decay,
                         param, exp_avg, exp_avg_sq, grad):
    """One torch-style AdamW step for one parameter: decoupled decay, bias-corrected moments."""
    grad = grad.astype(ms.float32)
    new_param = param.astype(ms.float32) * (1.0 - lr * weight_decay)
    new_exp_avg = beta1 * exp_avg + (1.0 - beta1) * grad
    new_exp_avg_sq = beta2 * exp_avg_sq + (1.0 - beta2) * grad * grad
    denom = ops.sqrt(new_exp_avg_sq) / ops.sqrt(bias_correction2) + eps
    new_param = new_param - (lr / bias_correction1) * new_exp_avg / denom
    success = ops.assign(exp_avg, new_exp_avg)
    success = ops.depend(success, ops.assign(exp_avg_sq, new_exp_avg_sq))
    return ops.depend(success, ops.assign(param, new_param.astype(param.dtype)))


_fused_adamw_update = ops.MultitypeFuncGraph("fused_adamw_update")


@_fused_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _fused_adamw_update_tensor(update, constants, lr, weight_decay, param, exp_avg, exp_avg_sq, grad):
    """_adamw_update_tensor of grad * grad_scale in one pass (the CPU's fused kernel); `constants` are (beta1, beta2,
    eps, bias_correction1, bias_correction2, grad_scale)."""
    # lr * 1.0: in PyNative mode a fixed learning rate is the Parameter itself, which Stack refuses
    hyper = ops.concat([ops.stack([1.0 - lr * weight_decay, lr * 1.0]).astype(ms.float32), constants])
    return update(param, exp_avg, exp_avg_sq, grad, hyper)


class AdamW(ScaledGradientsOptimizer):
    """AdamW as torch.optim.AdamW: bias-corrected moments and decoupled weight decay.

    `nn.AdamWeightDecay` has no bias correction, which changes the first steps of fine-tuning. On the CPU one fused
    pass per parameter instead of about ten ops.
    """

    def __init__(self, params, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(params, learning_rate, weight_decay, adamw_update_op)
        self.beta1 = ms.Tensor(beta1, ms.float32)
        self.beta2 = ms.Tensor(beta2, ms.float32)
        self.eps = ms.Tensor(eps, ms.float32)
        self.exp_avg = self._parameters.clone(prefix="adam_m", init="zeros")
        self.exp_avg_sq = self._parameters.clone(prefix="adam_v", init="zeros")
        self.beta1_power = ms.Parameter(ms.Tensor(1.0, ms.float32), name="beta1_power")
        self.beta2_power = ms.Parameter(ms.Tensor(1.0, ms.float32), name="beta2_power")

    def construct(self, gradients, grad_scale=None):
        lr, weight_decay, grad_scale = self.step_rates(grad_scale)
        beta1_power = self.beta1_power * self.beta1
        beta2_power = self.beta2_power * self.beta2
        ops.assign(self.beta1_power, beta1_power)
        ops.assign(self.beta2_power, beta2_power)
        bias_correction1 = 1.0 - beta1_power
        bias_correction2 = 1.0 - beta2_power
        if self.fused_update is None:
            gradients = scale_gradients(self.hyper_map, grad_scale, gradients)
            update = ops.partial(_adamw_update, self.beta1, self.beta2, self.eps, bias_correction1, bias_correction2)
        else:  # a partial of more than ~12 arguments fails at run time in MindSpore 2.10: constants as one tensor
            constants = ops.stack([self.beta1, self.beta2, self.eps, bias_correction1, bias_correction2, grad_scale])
            update = ops.partial(_fused_adamw_update, self.fused_update, constants)
        return self.hyper_map(update, lr, weight_decay, self._parameters, self.exp_avg, self.exp_avg_sq, gradients)


def _decayed_gradient(grad, grad_scale, weight_decay, param):
    """grad * grad_scale + weight_decay * param, in the gradient's type: the L2 form of weight decay (SGD, RMSProp)."""
    return grad * grad_scale.astype(grad.dtype) + weight_decay.astype(grad.dtype) * param.astype(grad.dtype)


_momentum_update = ops.MultitypeFuncGraph("momentum_update")


@_momentum_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _momentum_update_tensor(apply_momentum, momentum, grad_scale, lr, weight_decay, param, moment, grad):
    """One step of SGD with momentum for one parameter from grad * grad_scale + weight_decay * param."""
    return apply_momentum(param, moment, lr, _decayed_gradient(grad, grad_scale, weight_decay, param), momentum)


_fused_momentum_update = ops.MultitypeFuncGraph("fused_momentum_update")


@_fused_momentum_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _fused_momentum_update_tensor(update, momentum, grad_scale, lr, weight_decay, param, moment, grad):
    """_momentum_update_tensor in one pass (the CPU's fused kernel)."""
    # lr * 1.0: in PyNative mode a fixed learning rate is the Parameter itself, which Stack refuses
    return update(param, moment, grad, ops.stack([lr * 1.0, momentum, weight_decay, grad_scale]).astype(ms.float32))


class Momentum(ScaledGradientsOptimizer):
    """SGD with momentum as torch.optim.SGD (no dampening, not Nesterov) and nn.Momentum: with
    g = grad + weight_decay * param, moment = momentum * moment + g and param -= lr * moment.

    Its state has nn.Momentum's names (`moments.<parameter>`, `momentum`), so checkpoints of either resume with the
    other. On the CPU a float32 parameter's update is one fused pass that also applies the train step's gradient
    scale (nn.Momentum: a pass for the weight decay, one for the update, and the scaling before them).
    """

    def __init__(self, params, learning_rate, momentum=0.9, weight_decay=0.0):
        super().__init__(params, learning_rate, weight_decay, momentum_update_op)
        self.momentum = ms.Parameter(ms.Tensor(momentum, ms.float32), name="momentum")
        self.moments = self._parameters.clone(prefix="moments", init="zeros")
        self.apply_momentum = ops.ApplyMomentum()

    def construct(self, gradients, grad_scale=None):
        lr, weight_decay, grad_scale = self.step_rates(grad_scale)
        momentum = self.momentum * 1.0  # a Tensor: in PyNative mode Stack refuses the Parameter itself
        if self.fused_update is None:
            update = ops.partial(_momentum_update, self.apply_momentum, momentum, grad_scale)
        else:
            update = ops.partial(_fused_momentum_update, self.fused_update, momentum, grad_scale)
        return self.hyper_map(update, lr, weight_decay, self._parameters, self.moments, gradients)


_rmsprop_update = ops.MultitypeFuncGraph("rmsprop_update")


@_rmsprop_update.register("Function", "Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                          "Tensor", "Tensor")
def _rmsprop_update_tensor(apply_rmsprop, decay, momentum, eps, grad_scale, lr, weight_decay, param, mean_square,
                           moment, grad):
    """One TensorFlow-style RMSProp step for one parameter from grad * grad_scale + weight_decay * param."""
    grad = _decayed_gradient(grad, grad_scale, weight_decay, param)
    return apply_rmsprop(param, mean_square, moment, lr, grad, decay, momentum, eps)


_fused_rmsprop_update = ops.MultitypeFuncGraph("fused_rmsprop_update")


@_fused_rmsprop_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _fused_rmsprop_update_tensor(update, constants, lr, weight_decay, param, mean_square, moment, grad):
    """_rmsprop_update_tensor in one pass (the CPU's fused kernel); `constants` are (decay, momentum, eps,
    grad_scale)."""
    hyper = ops.concat([ops.stack([lr * 1.0, weight_decay]).astype(ms.float32), constants])
    return update(param, mean_square, moment, grad, hyper)


class RMSProp(ScaledGradientsOptimizer):
    """RMSProp as nn.RMSProp (TensorFlow's, as in BiT's recipe): the mean square starts at one, eps is inside the
    square root and the learning rate inside the momentum buffer; with g = grad + weight_decay * param,
    mean_square = decay * mean_square + (1 - decay) g^2, moment = momentum * moment + lr g / sqrt(mean_square + eps),
    param -= moment. Its state has nn.RMSProp's names (`mean_square.<parameter>`, `moment.<parameter>`). On the CPU
    each float32 parameter's update is one fused pass that also applies the train step's gradient scale.
    """

    def __init__(self, params, learning_rate, decay=0.9, momentum=0.0, eps=1e-10, weight_decay=0.0):
        super().__init__(params, learning_rate, weight_decay, rmsprop_update_op)
        self.decay, self.momentum, self.eps = float(decay), float(momentum), float(eps)
        self.constants = ms.Tensor([decay, momentum, eps], ms.float32)
        self.mean_square = self._parameters.clone(prefix="mean_square", init="ones")
        self.moment = self._parameters.clone(prefix="moment", init="zeros")
        self.apply_rmsprop = ops.ApplyRMSProp()

    def construct(self, gradients, grad_scale=None):
        lr, weight_decay, grad_scale = self.step_rates(grad_scale)
        if self.fused_update is None:
            update = ops.partial(_rmsprop_update, self.apply_rmsprop, self.decay, self.momentum, self.eps, grad_scale)
        else:
            constants = ops.concat([self.constants, grad_scale.reshape(1)])
            update = ops.partial(_fused_rmsprop_update, self.fused_update, constants)
        return self.hyper_map(update, lr, weight_decay, self._parameters, self.mean_square, self.moment, gradients)


_lars_update = ops.MultitypeFuncGraph("lars_update")


@_lars_update.register("Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _lars_update_tensor(momentum, eta, lr, weight_decay, param, velocity, grad):
    """MAE's LARS step for one parameter: weights (ndim > 1) get weight decay and the trust ratio
    eta * |w| / |update|; 1-d parameters neither."""
    update = grad.astype(ms.float32)
    weight = param.astype(ms.float32)
    if param.ndim > 1:
        update = update + weight_decay * weight
        param_norm = ops.norm(weight)
        update_norm = ops.norm(update)
        trust = ops.select(param_norm > 0, ops.select(update_norm > 0, eta * param_norm / update_norm,
                                                      ops.ones_like(param_norm)), ops.ones_like(param_norm))
        update = update * trust
    new_velocity = momentum * velocity + update
    success = ops.assign(velocity, new_velocity)
    return ops.depend(success, ops.assign(param, (weight - lr * new_velocity).astype(param.dtype)))


class LARS(nn.Optimizer):
    """SGD with momentum and layer-wise trust ratios, as facebookresearch/mae `util/lars.py` (MindSpore's
    nn.LARS needs a kernel the CPU lacks)."""

    def __init__(self, params, learning_rate, momentum=0.9, weight_decay=0.0, eta=0.001):
        super().__init__(learning_rate, as_groups(params), weight_decay)
        self.momentum = ms.Tensor(momentum, ms.float32)
        self.eta = ms.Tensor(eta, ms.float32)
        self.velocity = self._parameters.clone(prefix="lars_mu", init="zeros")

    def construct(self, gradients):
        lr = self.get_lr()
        weight_decay = self.get_weight_decay()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if self.is_group_lr:
            return self.hyper_map(ops.partial(_lars_update, self.momentum, self.eta), lr, weight_decay,
                                  self._parameters, self.velocity, gradients)
        return self.hyper_map(ops.partial(_lars_update, self.momentum, self.eta, lr), weight_decay,
                              self._parameters, self.velocity, gradients)


NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "relative_position_bias_table")


def no_weight_decay(param):
    """Biases, norm scales / shifts, other 1-d parameters, position embeddings and tokens are not decayed."""
    return (len(param.shape) <= 1 or param.name.endswith((".bias", ".gamma", ".beta"))
            or param.name.split(".")[-1] in NO_DECAY_NAMES)


def vit_layer_id(name, depth):
    """unilm's layer index: embeddings 0, block i -> i + 1, everything after the blocks depth + 1."""
    if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(network, weight_decay, filter_bias_and_bn=True, learning_rate=None, layer_decay=1.0):
    """Optimizer parameter groups: decayed or not, and with layer_decay < 1 one group per ViT layer whose
    learning rate is `learning_rate` (per-step array) * layer_decay ** (depth + 1 - layer id)."""
    params = network.trainable_params()
    use_layer_decay = layer_decay != 1.0
    if use_layer_decay and not hasattr(network, "blocks"):
        raise UserInputError(f"layer_decay is for ViTs; {type(network).__name__} has no transformer blocks")
    depth = len(network.blocks) if use_layer_decay else 0
    groups = {}
    for param in params:
        decay = not (filter_bias_and_bn and no_weight_decay(param))
        layer = vit_layer_id(param.name, depth) if use_layer_decay else 0
        groups.setdefault((layer, decay), []).append(param)
    result = []
    for (layer, decay), members in sorted(groups.items()):
        group = {"params": members, "weight_decay": weight_decay if decay else 0.0}
        if use_layer_decay:
            group["lr"] = ms.Tensor(np.asarray(learning_rate) * layer_decay ** (depth + 1 - layer), ms.float32)
        result.append(group)
    return result + [{"order_params": params}]


def create_optimizer(args, network, learning_rate):
    """The optimizer the config names, over `network`'s trainable parameters."""
    groups = param_groups(network, args.weight_decay, args.filter_bias_and_bn, learning_rate, args.layer_decay)
    learning_rate = ms.Tensor(learning_rate, ms.float32)
    name = args.optimizer.lower()
    if name in ("momentum", "sgd"):
        return Momentum(groups, learning_rate, momentum=args.momentum)
    if name == "rmsprop":
        return RMSProp(groups, learning_rate, decay=args.decay, momentum=args.momentum, eps=args.eps)
    if name == "lars":
        return LARS(groups, learning_rate, momentum=args.momentum)
    if name == "adamw":
        beta1, beta2 = args.beta
        return AdamW(groups, learning_rate, beta1=beta1, beta2=beta2, eps=args.eps)
    raise UserInputError(f"unknown optimizer '{args.optimizer}', expected one of {list(OPTIMIZERS)}")


def schedule_param_names(optimizer):
    """Names of the optimizer's per-step learning-rate arrays. A resumed run rebuilds them from its config
    (which may train for more epochs) instead of loading them."""
    rates = optimizer.learning_rate  # a Parameter, or with per-group rates a CellList holding them
    return {param.name for param in rates.get_parameters()} if isinstance(rates, nn.Cell) else {rates.name}


def current_learning_rate(optimizer, schedule):
    """The base learning rate (before layer decay) of the optimizer's latest update; steps skipped on a loss
    scale overflow do not advance the optimizer, so this reads its own step count."""
    updates = int(optimizer.global_step.asnumpy().reshape(-1)[0])
    return float(schedule[min(max(updates - 1, 0), len(schedule) - 1)])
