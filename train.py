"""Train a model from a YAML config: python train.py --config src/configs/X.yaml [--key value ...]"""
import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn
from mindspore.train import Model

from src.args import parse_args
from src.data import create_dataset, uses_mixup
from src.errors import UserInputError, report_user_errors
from src.models import create_model_from_args
from src.models.mae.mae import MaePretrainLoss
from src.tools.amp import apply_amp
from src.tools.callbacks import CheckpointAndEval, StepLogger, resume_state
from src.tools.checkpoint import load_checkpoint, load_weights, network_weights
from src.tools.context import init_context
from src.tools.criterion import create_criterion
from src.tools.optimizer import create_optimizer
from src.tools.schedulers import create_lr_schedule
from src.trainers.train_one_step import create_train_step

TASKS = ("classification", "mae_pretrain")


def build_network(args):
    """The model, initialised from `pretrained`: a classifier head of another class count, or one missing
    from a pretraining checkpoint (with the fc_norm of mean pooling), starts anew."""
    network = create_model_from_args(args)
    if args.pretrained:
        head = getattr(network, "classifier_name", "head") + "."
        load_weights(network, network_weights(load_checkpoint(args.pretrained)), args.pretrained,
                     head_prefixes=(head,), missing_ok=(head, "fc_norm."))
    if args.linear_probe or args.freeze_blocks:
        freeze(network, args)
    return network


def freeze(network, args):
    """Linear probing trains the head only; `freeze_blocks` N also freezes the embeddings and blocks 0..N-1."""
    if not hasattr(network, "blocks"):
        raise UserInputError(f"linear_probe / freeze_blocks are for ViTs; {args.arch} has no transformer blocks")
    frozen_blocks = tuple(f"blocks.{index}." for index in range(args.freeze_blocks))
    for param in network.get_parameters():
        if args.linear_probe:
            param.requires_grad = param.name.startswith("head.")
        elif param.name.startswith(("patch_embed.", "cls_token", "pos_embed") + frozen_blocks):
            param.requires_grad = False


def network_with_loss(args, network):
    if args.task == "mae_pretrain":
        return MaePretrainLoss(network)  # the model computes its own loss
    return nn.WithLossCell(network, create_criterion(args, soft_targets=uses_mixup(args)))


@report_user_errors
def main(argv=None):
    args = parse_args(argv)
    rank, group_size = init_context(args)
    ms.set_seed(args.seed)
    ds.config.set_seed(args.seed)
    distributed = group_size > 1
    log_prefix = f"[rank {rank}] " if distributed else ""

    def log(message):
        print(f"{log_prefix}{message}", flush=True)

    if args.task not in TASKS:
        raise UserInputError(f"unknown task '{args.task}', expected one of {list(TASKS)}")
    train_data = create_dataset(args, training=True, num_shards=group_size if distributed else None,
                                shard_id=rank if distributed else None)
    evaluates = args.task == "classification" and args.eval_interval > 0
    eval_data = create_dataset(args, training=False) if evaluates else None
    steps_per_epoch = train_data.get_dataset_size()

    network = build_network(args)
    network = apply_amp(network, args.amp_level, args.keep_bn_fp32)
    optimizer = create_optimizer(args, network, create_lr_schedule(args, steps_per_epoch))
    train_cell = create_train_step(args, network_with_loss(args, network), optimizer)

    start_epoch, best = 0, (0.0, 0)
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        load_weights(train_cell, checkpoint, args.resume)
        start_epoch, best = resume_state(checkpoint)
        log(f"resumed from {args.resume} at epoch {start_epoch}")
    if start_epoch >= args.epochs:
        log(f"nothing to do: the checkpoint is at epoch {start_epoch} of {args.epochs}")
        return

    log(f"training {args.arch} on {args.set}: {steps_per_epoch} steps per epoch, batch {args.batch_size} "
        f"x {group_size} device(s), epochs {start_epoch + 1}..{args.epochs}")
    callbacks = [StepLogger(steps_per_epoch, args.log_interval, log),
                 CheckpointAndEval(train_cell, network, eval_data, args, steps_per_epoch, rank=rank, best=best,
                                   save=rank == 0, show_rank=distributed, log=log)]
    Model(train_cell).train(args.epochs, train_data, callbacks=callbacks, dataset_sink_mode=False,
                            initial_epoch=start_epoch)


if __name__ == "__main__":
    main()
