"""Train a model from a YAML config: python train.py --config src/configs/X.yaml [--key value ...]"""
import os
import socket
import sys

import mindspore as ms
import mindspore.dataset as ds

from src.args import parse_args
from src.data import create_dataset
from src.engine.callbacks import CheckpointAndEval, DivergenceGuard, MetricsFile, StepLogger
from src.engine.loop import sink_size_for, train_epochs
from src.engine.resume import fetch_newest_checkpoint, newest_checkpoint, resume_training
from src.engine.train_one_step import create_train_step, with_accumulation
from src.errors import make_folder, report_user_errors
from src.models.layers import recompute_units
from src.optim.optimizer import create_optimizer, current_learning_rate, schedule_param_names
from src.optim.schedulers import create_lr_schedule, peak_learning_rate
from src.runtime.amp import apply_amp
from src.runtime.context import init_context, init_data_parallel, sum_over_ranks
from src.runtime.modelarts import UploadOutputs, fetch_inputs
from src.runtime.signals import StopSignals
from src.tasks import create_task, unused_config_keys


@report_user_errors
def main(argv=None):
    args = parse_args(argv)
    init_context(args)
    rank, group_size = init_data_parallel(args)
    ms.set_seed(args.seed)
    ds.config.set_seed(args.seed)
    distributed = group_size > 1
    log_prefix = f"[rank {rank}] " if distributed else ""

    def log(message):
        print(f"{log_prefix}{message}", flush=True)

    if distributed:
        log(f"process {os.getpid()} on {socket.gethostname()}, rank {rank} of {group_size}")
    task = create_task(args)
    unused = unused_config_keys(args, task)
    if unused:
        log(f"warning: neither task {task.name} nor model {args.arch} reads {', '.join(unused)}: ignored")
    remote_train_url = fetch_inputs(args, rank, log)
    writes_outputs = rank == 0 or args.save_all_ranks
    if writes_outputs:  # before anything is built: a train_url that cannot be a folder fails at once
        make_folder(args.train_url, "of the run (train_url)")
    # one shard when alone too: the sampler then visits the images in the order that the union of
    # the shards' batches does under data parallel, so both runs see the same global batches
    train_data = create_dataset(args, training=True, view=task.dataset_view, num_shards=group_size, shard_id=rank)
    eval_data = (create_dataset(args, training=False, num_shards=group_size, shard_id=rank) if task.evaluates
                 else None)
    steps_per_epoch = train_data.get_dataset_size()

    network, helper = task.build_networks(seed=args.seed + rank, log=log)
    if args.recompute:
        log(f"recompute: {recompute_units(network)} blocks recompute their activations in the backward pass")
    network = apply_amp(network, args.amp_level, args.keep_bn_fp32)
    args.base_lr, lr_note = peak_learning_rate(args, group_size)
    lr_schedule = create_lr_schedule(args, steps_per_epoch)
    optimizer = create_optimizer(args, network, lr_schedule)
    train_cell = create_train_step(args, task.loss_cell(network, helper), optimizer)

    start_step, best, checkpoint = 0, (0.0, 0), None
    if args.resume == "auto":
        searched = os.path.join(remote_train_url or args.train_url, "ckpt_0000")
        args.resume, checkpoint = (
            fetch_newest_checkpoint(remote_train_url, os.path.join(args.cache_dir, f"resume_{rank}"), log)
            if remote_train_url else newest_checkpoint(args.train_url, log=log))
        log(f"resume auto: from {args.resume}" if args.resume else
            f"resume auto: no checkpoint in {searched}; starting fresh")
    if args.resume:
        schedules = schedule_param_names(optimizer)
        start_step, best = resume_training(train_cell, args.resume, steps_per_epoch, log=log, checkpoint=checkpoint,
                                           skip=lambda name: task.frozen_param(name) or name in schedules)
    task.prepare(network, train_data, log)
    if start_step >= args.epochs * steps_per_epoch:
        log(f"nothing to do: the checkpoint is at epoch {start_step // steps_per_epoch} of {args.epochs}")
        return

    log(f"training {args.arch} on {args.set}: {steps_per_epoch} steps per epoch, {lr_note}, "
        f"epochs {start_step // steps_per_epoch + 1}..{args.epochs}")
    metrics = MetricsFile(os.path.join(args.train_url, "metrics.jsonl"), start_step) if rank == 0 else None
    stop_signals = StopSignals(log)
    checkpoints = CheckpointAndEval(train_cell, network, eval_data, args, steps_per_epoch, rank=rank, best=best,
                                    save=writes_outputs, show_rank=distributed, skip=task.frozen_param,
                                    metrics=metrics, log=log, sum_over_ranks=sum_over_ranks if distributed else None,
                                    stop_signals=stop_signals)
    callbacks = [StepLogger(steps_per_epoch, args.log_interval, log, metrics=metrics,
                            images_per_step=args.batch_size * group_size * args.accum_steps,
                            lr_now=lambda: current_learning_rate(optimizer, lr_schedule),
                            unreadable_images=train_data.unreadable_images), checkpoints,
                 DivergenceGuard(args.is_dynamic_loss_scale, args.max_overflow_steps, steps_per_epoch,
                                 last_checkpoint=lambda: newest_checkpoint(args.train_url, log=log)[0])]
    if remote_train_url and writes_outputs:
        callbacks.append(UploadOutputs(args.train_url, remote_train_url, rank))
    sink_size = sink_size_for(args, steps_per_epoch, accumulating=args.accum_steps > 1, log=log)
    with stop_signals:
        train_epochs(with_accumulation(train_cell, args.accum_steps), train_data, args.epochs, callbacks,
                     start_step=start_step, sink_size=sink_size)
    if checkpoints.stopped:
        if distributed:  # no rank exits (and makes the launcher stop the others) before rank 0 has saved
            sum_over_ranks([0.0])
        epoch, step, path = checkpoints.stopped
        log(f"interrupted by {stop_signals.name} at epoch {epoch} step {step}; saved {path}; continue with "
            "--resume auto")
        sys.exit(128 + stop_signals.received)
    log(f"training finished at epoch {args.epochs}")


if __name__ == "__main__":
    main()
