"""Training callbacks: the seeds' log lines, metrics.jsonl, checkpoints (latest N and best), evaluation."""
import contextlib
import glob
import json
import os
import re
import time

import mindspore as ms
from mindspore.train.callback import Callback

from src.engine.evaluation import evaluate
from src.engine.train_one_step import STOP_REQUESTED
from src.errors import UserInputError, make_folder
from src.weights.checkpoint import save_checkpoint


def _step_in_epoch(global_step, steps_per_epoch):
    """1..steps_per_epoch: the position of global step `global_step` (counted from 1) in its epoch."""
    return (global_step - 1) % steps_per_epoch + 1


def _crossed(step, steps_in_call, interval):
    """Whether the last call (steps step - steps_in_call + 1 .. step) passed a multiple of `interval`: every
    step when stepping, the group's end when sinking."""
    return step // interval > (step - steps_in_call) // interval


def _flag(net_outputs, index):
    """A boolean the train step returns: (loss, overflow, loss scale, stop) at index 1 or 3; False where the
    step returns fewer outputs."""
    return isinstance(net_outputs, (tuple, list)) and len(net_outputs) > index and bool(net_outputs[index].asnumpy())


def _loss_value(net_outputs):
    loss = net_outputs[0] if isinstance(net_outputs, (tuple, list)) else net_outputs
    return float(loss.asnumpy()) if isinstance(loss, ms.Tensor) else float(loss)


def _complete_records(lines):
    """The JSON records of metrics.jsonl lines, without a last line cut short by a killed process."""
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


class MetricsFile:
    """`TRAIN_URL/metrics.jsonl`: one JSON object per line (train records at the log interval, eval records
    after each evaluation). A run resumed at step S first drops the records after S, so that the file reads
    as one uninterrupted run; a fresh run starts an empty file."""

    def __init__(self, path, start_step=0):
        self.path = path
        kept = []
        if start_step and os.path.exists(path):
            with open(path, encoding="utf-8") as lines:
                kept = [record for record in _complete_records(lines) if record["step"] <= start_step]
        make_folder(os.path.dirname(os.path.abspath(path)), "of the run (train_url)")
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(json.dumps(record) + "\n" for record in kept)
        self.last_train_record = next((record for record in reversed(kept) if "loss" in record), None)

    def write(self, **record):
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


class StepLogger(Callback):
    """`epoch: 3 step: 120, loss is 1.234` every `log_interval` steps and at each epoch's end, then
    `epoch time: X ms, per step time: Y ms` (and how many unreadable images were substituted so far, if any).
    With a MetricsFile, each loss line is also a record: epoch,
    step (global), loss, lr, loss_scale, overflow_count (skipped steps so far) and images_per_sec (all
    devices, since the previous record)."""

    def __init__(self, steps_per_epoch, log_interval, log=print, metrics=None, images_per_step=0, lr_now=None,
                 unreadable_images=()):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.log_interval = max(1, log_interval)
        self.log = log
        self.metrics = metrics
        self.images_per_step = images_per_step
        self.lr_now = lr_now
        self.unreadable_images = unreadable_images
        last = metrics.last_train_record if metrics else None
        self.overflow_total = last["overflow_count"] if last else 0
        self.epoch_start = None
        self.epoch_first_step = 0
        self.overflow_steps = 0
        self.interval_start = None

    def on_train_epoch_begin(self, run_context):
        self.epoch_start = time.time()
        self.overflow_steps = 0
        self.epoch_first_step = run_context.original_args().cur_step_num
        self.interval_start = (self.epoch_start, self.epoch_first_step)

    def on_train_step_end(self, run_context):
        params = run_context.original_args()
        step = _step_in_epoch(params.cur_step_num, self.steps_per_epoch)
        outputs = params.net_outputs
        if _flag(outputs, 1):
            self.overflow_steps += 1
            self.overflow_total += 1
        if _crossed(step, params.steps_in_call, self.log_interval) or step == self.steps_per_epoch:
            loss = _loss_value(outputs)
            self.log(f"epoch: {params.cur_epoch_num} step: {step}, loss is {loss}")
            if self.metrics:
                self._record(params, loss)

    def _record(self, params, loss):
        now = time.time()
        start_time, start_step = self.interval_start
        self.interval_start = (now, params.cur_step_num)
        outputs = params.net_outputs
        scale = float(outputs[2].asnumpy()) if isinstance(outputs, (tuple, list)) and len(outputs) > 2 else 1.0
        self.metrics.write(epoch=params.cur_epoch_num, step=params.cur_step_num, loss=loss,
                           lr=self.lr_now() if self.lr_now else None, loss_scale=scale,
                           overflow_count=self.overflow_total,
                           images_per_sec=round((params.cur_step_num - start_step) * self.images_per_step
                                                / max(now - start_time, 1e-9), 2))

    def on_train_epoch_end(self, run_context):
        elapsed_ms = (time.time() - self.epoch_start) * 1000
        steps_run = run_context.original_args().cur_step_num - self.epoch_first_step  # fewer in a resumed epoch
        self.log(f"epoch time: {elapsed_ms:.3f} ms, per step time: {elapsed_ms / max(steps_run, 1):.3f} ms")
        if self.overflow_steps:
            self.log(f"epoch: {run_context.original_args().cur_epoch_num} skipped {self.overflow_steps} "
                     "steps with non-finite gradients (loss scale overflow)")
        if self.unreadable_images:
            self.log(f"epoch: {run_context.original_args().cur_epoch_num} {len(self.unreadable_images)} unreadable "
                     "images so far, each replaced by the next readable one")


class DivergenceGuard(Callback):
    """Stops a run that can no longer recover instead of skipping steps forever: with a dynamic loss scale,
    `max_overflow_steps` consecutive overflowing steps once the scale is at its minimum; with a fixed scale, any
    overflow (the loss or the gradients not finite). The overflow flag is the one all ranks agreed on, so all
    stop at the same step. `last_checkpoint()` names the checkpoint to go back to."""

    MINIMUM_SCALE = 1.0  # nn.DynamicLossScaleUpdateCell never goes below it

    def __init__(self, dynamic, max_overflow_steps, steps_per_epoch, last_checkpoint):
        super().__init__()
        self.dynamic = dynamic
        self.max_overflow_steps = max_overflow_steps
        self.steps_per_epoch = steps_per_epoch
        self.last_checkpoint = last_checkpoint
        self.overflowing_at_minimum = 0

    def on_train_step_end(self, run_context):
        params = run_context.original_args()
        outputs = params.net_outputs
        if not _flag(outputs, 1):
            self.overflowing_at_minimum = 0
            return
        scale = float(outputs[2].asnumpy())
        where = f"epoch {params.cur_epoch_num} step {_step_in_epoch(params.cur_step_num, self.steps_per_epoch)}"
        if not self.dynamic:
            reason = f"the loss or the gradients are not finite (loss {_loss_value(outputs)}) with a fixed loss " \
                     f"scale of {scale:g}"
        elif scale <= self.MINIMUM_SCALE:
            self.overflowing_at_minimum += 1
            if self.overflowing_at_minimum < self.max_overflow_steps:
                return
            reason = f"{self.overflowing_at_minimum} consecutive steps overflowed with the loss scale at its " \
                     f"minimum ({scale:g})"
        else:
            return
        last = self.last_checkpoint()
        raise UserInputError(f"training diverged at {where}: {reason}; "
                             + (f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"))


CHECKPOINT_NAME = re.compile(r"^.+_\d{4}-(\d+)_(\d+)\.ckpt$")  # <arch>_<rank>-<epoch>_<step in epoch>.ckpt


def checkpoint_position(path):
    """(epoch, step in epoch) of a checkpoint named as CheckpointAndEval names them, like
    `bit_m_r50x1_0000-12_390.ckpt`; None for any other name."""
    match = CHECKPOINT_NAME.match(os.path.basename(path))
    return (int(match.group(1)), int(match.group(2))) if match else None


@contextlib.contextmanager
def ema_weights_in(train_cell):
    """Temporarily put the EMA weights into the network (for evaluation), restoring afterwards."""
    if not getattr(train_cell, "use_ema", False):
        yield
        return
    originals = [param.asnumpy().copy() for param in train_cell.weights]
    for param, ema in zip(train_cell.weights, train_cell.ema.ema_weights):
        param.set_data(ms.Tensor(ema.asnumpy()))
    try:
        yield
    finally:
        for param, original in zip(train_cell.weights, originals):
            param.set_data(ms.Tensor(original))


class CheckpointAndEval(Callback):
    """At each epoch's end: save the latest checkpoint (keeping `keep_checkpoint_max`), evaluate every
    `eval_interval` epochs and keep the best checkpoint, logging
    `epoch: 0003 acc: 0.8519, best epoch: 0002, acc is 0.8521`. With `save_checkpoint_steps`, the latest
    checkpoint is also saved every that many steps inside an epoch, to resume from mid-epoch.

    Checkpoints are named as the seeds': `ckpt_0000/<arch>_0000-<epoch>_<step in epoch>.ckpt` and
    `ckpt_best_0000/...` (0000: the rank). They hold the train cell's parameters (model, optimizer
    state, loss scale, EMA, noise state) plus the epoch, the global step and the best accuracy so far, for
    resuming; parameters that `skip` accepts (a frozen tokenizer or teacher) are left out.
    """

    def __init__(self, train_cell, network, eval_dataset, args, steps_per_epoch, rank=0, best=(0.0, 0),
                 save=True, show_rank=False, skip=None, metrics=None, log=print, sum_over_ranks=None,
                 stop_signals=None):
        super().__init__()
        self.train_cell = train_cell
        self.network = network
        self.eval_dataset = eval_dataset
        self.prefix = f"{args.arch}_{rank:04d}"
        # where rank 0, which always saves, writes: what a rank that does not save points to
        self.saving_dir, self.saving_prefix = os.path.join(args.train_url, "ckpt_0000"), f"{args.arch}_0000"
        self.last_dir = os.path.join(args.train_url, f"ckpt_{rank:04d}")
        self.best_dir = os.path.join(args.train_url, f"ckpt_best_{rank:04d}")
        self.keep_max = args.keep_checkpoint_max
        self.save_steps = args.save_checkpoint_steps
        self.eval_interval = args.eval_interval
        self.use_ema = args.eval_use_ema
        self.steps_per_epoch = steps_per_epoch
        self.best_acc, self.best_epoch = best
        self.save = save
        self.device_tag = f" device: {rank:04d}" if show_rank else ""
        self.skip = skip
        self.metrics = metrics
        self.log = log
        self.sum_over_ranks = sum_over_ranks
        self.stop_signals = stop_signals
        self.stop_flagged = False
        self.stopped = None  # (epoch, step in epoch, checkpoint) after a graceful stop

    def _path(self, folder, epoch, global_step, prefix=None):
        name = f"{prefix or self.prefix}-{epoch}_{_step_in_epoch(global_step, self.steps_per_epoch)}.ckpt"
        return os.path.join(folder, name)

    def _stop_agreed(self, outputs):
        """Ask the next step to carry this rank's stop request; True once a step says some rank asked."""
        if self.stop_signals.received is not None and not self.stop_flagged:
            self.train_cell.stop_requested.set_data(ms.Tensor(1.0, ms.float32))
            self.stop_flagged = True
        return _flag(outputs, 3)

    def _save(self, folder, epoch, global_step, keep):
        path = self._path(folder, epoch, global_step)
        save_checkpoint(self.train_cell, path, append_dict={
            "epoch_num": epoch, "step_num": global_step, "best_acc": float(self.best_acc),
            "best_epoch": int(self.best_epoch)},
            skip=lambda name: name == STOP_REQUESTED or (self.skip is not None and self.skip(name)))
        old = sorted(glob.glob(os.path.join(folder, f"{self.prefix}-*.ckpt")), key=checkpoint_position)
        for stale in old[:-keep] if keep > 0 else []:
            os.remove(stale)
        return path

    def on_train_step_end(self, run_context):
        params = run_context.original_args()
        step = params.cur_step_num
        if self.stop_signals is not None and self._stop_agreed(params.net_outputs):
            self.stopped = (params.cur_epoch_num, _step_in_epoch(step, self.steps_per_epoch),
                            self._save(self.last_dir, params.cur_epoch_num, step, keep=self.keep_max)
                            if self.save else self._path(self.saving_dir, params.cur_epoch_num, step,
                                                         self.saving_prefix))
            run_context.request_stop()
            return
        if (self.save and self.save_steps > 0 and _crossed(step, params.steps_in_call, self.save_steps)
                and step % self.steps_per_epoch):
            self._save(self.last_dir, params.cur_epoch_num, step, keep=self.keep_max)

    def on_train_epoch_end(self, run_context):
        params = run_context.original_args()
        epoch, step = params.cur_epoch_num, params.cur_step_num
        if self.eval_dataset is not None and self.eval_interval > 0 and epoch % self.eval_interval == 0:
            with ema_weights_in(self.train_cell) if self.use_ema else contextlib.nullcontext():
                metrics = evaluate(self.network, self.eval_dataset, sum_over_ranks=self.sum_over_ranks)
            if metrics["top1"] > self.best_acc or self.best_epoch == 0:
                self.best_acc, self.best_epoch = metrics["top1"], epoch
                if self.save:
                    self._save(self.best_dir, epoch, step, keep=1)
            self.log(f"epoch: {epoch:04d}{self.device_tag} acc: {metrics['top1']}, "
                     f"best epoch: {self.best_epoch:04d}, acc is {self.best_acc}"
                     + (f" ({metrics['left_out']} unreadable images left out)" if metrics["left_out"] else ""))
            if self.metrics:
                self.metrics.write(epoch=epoch, step=step, top1=metrics["top1"], top5=metrics["top5"],
                                   eval_loss=metrics["loss"], num_samples=metrics["num_samples"],
                                   left_out=metrics["left_out"])
        if self.save:
            self._save(self.last_dir, epoch, step, keep=self.keep_max)
