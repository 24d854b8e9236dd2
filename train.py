"""Train a model from a YAML config: python train.py --config src/configs/X.yaml [--key value ...]"""
import os
import socket

import mindspore as ms
import mindspore.dataset as ds
from mindspore.train import Model

from src.args import parse_args
from src.data import create_dataset
from src.errors import report_user_errors
from src.tools.amp import apply_amp
from src.tools.callbacks import CheckpointAndEval, StepLogger, resume_state
from src.tools.checkpoint import load_checkpoint, load_weights
from src.tools.context import init_context, init_data_parallel
from src.tools.modelarts import UploadOutputs, fetch_inputs
from src.tools.optimizer import create_optimizer, schedule_param_names
from src.tools.schedulers import create_lr_schedule
from src.trainers.tasks import build_networks, check_task, frozen_param, network_with_loss, prepare_training
from src.trainers.train_one_step import create_train_step


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
    check_task(args)
    remote_train_url = fetch_inputs(args, log)
    # one shard when alone too: the sampler then visits the images in the order that the union of
    # the shards' batches does under data parallel, so both runs see the same global batches
    train_data = create_dataset(args, training=True, num_shards=group_size, shard_id=rank)
    evaluates = args.task == "classification" and args.eval_interval > 0
    eval_data = create_dataset(args, training=False) if evaluates else None
    steps_per_epoch = train_data.get_dataset_size()

    network, helper = build_networks(args, log)
    network = apply_amp(network, args.amp_level, args.keep_bn_fp32)
    optimizer = create_optimizer(args, network, create_lr_schedule(args, steps_per_epoch))
    train_cell = create_train_step(args, network_with_loss(args, network, helper), optimizer)

    start_epoch, best = 0, (0.0, 0)
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        schedules = schedule_param_names(optimizer)
        load_weights(train_cell, checkpoint, args.resume, skip=lambda name: frozen_param(name) or name in schedules)
        start_epoch, best = resume_state(checkpoint)
        log(f"resumed from {args.resume} at epoch {start_epoch}")
    prepare_training(args, network, train_data, log)
    if start_epoch >= args.epochs:
        log(f"nothing to do: the checkpoint is at epoch {start_epoch} of {args.epochs}")
        return

    log(f"training {args.arch} on {args.set}: {steps_per_epoch} steps per epoch, batch {args.batch_size} "
        f"x {group_size} device(s), epochs {start_epoch + 1}..{args.epochs}")
    writes_outputs = rank == 0 or args.save_all_ranks
    callbacks = [StepLogger(steps_per_epoch, args.log_interval, log),
                 CheckpointAndEval(train_cell, network, eval_data, args, steps_per_epoch, rank=rank, best=best,
                                   save=writes_outputs, show_rank=distributed, skip=frozen_param, log=log)]
    if remote_train_url and writes_outputs:
        callbacks.append(UploadOutputs(args.train_url, remote_train_url, rank))
    Model(train_cell).train(args.epochs, train_data, callbacks=callbacks, dataset_sink_mode=False,
                            initial_epoch=start_epoch)
    log(f"training finished at epoch {args.epochs}")


if __name__ == "__main__":
    main()
