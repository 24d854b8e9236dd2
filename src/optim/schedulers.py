"""Learning-rate schedules as per-step arrays (one value per optimizer step)."""
import math

import numpy as np

from src.errors import UserInputError

SCHEDULERS = ("cosine_lr", "exp_decay_lr", "constant_lr")


def peak_learning_rate(args, devices):
    """(lr, how it was set): base_lr, or MAE's blr x effective batch / 256 when blr is set."""
    effective_batch = args.batch_size * devices * args.accum_steps
    batch = f"effective batch {effective_batch} (batch_size {args.batch_size} x {devices} device(s) x " \
            f"accum_steps {args.accum_steps})"
    if args.blr is None:
        return args.base_lr, f"{batch}, lr {args.base_lr:g}"
    lr = args.blr * effective_batch / 256
    return lr, f"{batch}, lr {lr:g} = blr {args.blr:g} x {effective_batch} / 256"


def warmup_then(schedule, base_lr, warmup_lr, warmup_steps):
    """Replace the first `warmup_steps` of `schedule` by a linear ramp from warmup_lr to base_lr."""
    warmup_steps = min(warmup_steps, len(schedule))
    schedule[:warmup_steps] = warmup_lr + (base_lr - warmup_lr) * np.arange(warmup_steps) / max(warmup_steps, 1)
    return schedule


def cosine_lr(base_lr, min_lr, total_steps, warmup_steps=0, warmup_lr=0.0, cool_steps=0, cool_lr=0.0):
    """Linear warmup, half-cosine from base_lr to min_lr, then `cool_steps` at cool_lr (as unilm's BEiT)."""
    decay_steps = max(total_steps - warmup_steps - cool_steps, 0)
    progress = np.arange(decay_steps) / max(decay_steps, 1)
    cosine = min_lr + 0.5 * (base_lr - min_lr) * (1 + np.cos(math.pi * progress))
    schedule = np.concatenate([np.zeros(warmup_steps), cosine, np.full(cool_steps, cool_lr)])[:total_steps]
    return warmup_then(schedule, base_lr, warmup_lr, warmup_steps)


def exp_decay_lr(base_lr, total_steps, steps_per_decay, decay_rate, warmup_steps=0, warmup_lr=0.0):
    """base_lr * decay_rate ** floor(step / steps_per_decay), after a linear warmup (BiT's seed recipe)."""
    schedule = base_lr * decay_rate ** np.floor(np.arange(total_steps) / steps_per_decay)
    return warmup_then(schedule, base_lr, warmup_lr, warmup_steps)


def create_lr_schedule(args, steps_per_epoch):
    """float32 learning rate for every step of `args.epochs` epochs."""
    total = args.epochs * steps_per_epoch
    warmup = int(round(args.warmup_length * steps_per_epoch))
    if args.lr_scheduler == "cosine_lr":
        schedule = cosine_lr(args.base_lr, args.min_lr, total, warmup, args.warmup_lr,
                             int(round(args.cool_length * steps_per_epoch)), args.cool_lr)
    elif args.lr_scheduler == "exp_decay_lr":
        schedule = exp_decay_lr(args.base_lr, total, max(args.lr_num_epochs_per_decay * steps_per_epoch, 1),
                                args.lr_decay, warmup, args.warmup_lr)
    elif args.lr_scheduler == "constant_lr":
        schedule = warmup_then(np.full(total, float(args.base_lr)), args.base_lr, args.warmup_lr, warmup)
    else:
        raise UserInputError(f"unknown lr_scheduler '{args.lr_scheduler}', expected one of {list(SCHEDULERS)}")
    return schedule.astype(np.float32)
