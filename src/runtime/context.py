"""MindSpore execution context and data-parallel initialisation."""
import os

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import ops
from mindspore.communication import get_group_size, get_rank, init

from src.errors import UserInputError

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")


def launched_distributed():
    """True under msrun or a rank-table launch (the launcher sets these variables)."""
    return any(int(os.environ.get(name, "1")) > 1 for name in ("MS_WORKER_NUM", "RANK_SIZE"))


def init_context(args):
    """Set mode, determinism and device. A launched process takes its device from the launcher (DEVICE_ID, msrun's
    local rank); a single one from `device_id`."""
    if args.device_target not in DEVICE_TARGETS:
        raise UserInputError(f"unknown device_target '{args.device_target}', expected one of {list(DEVICE_TARGETS)}")
    ms.set_context(mode=ms.GRAPH_MODE if args.graph_mode else ms.PYNATIVE_MODE)
    if args.deterministic:
        ms.set_context(deterministic="ON")
    # a dataset started mid-run replays the augmentations it skips (exact) or skips them (fast)
    ds.config.set_fast_recovery(not args.deterministic)
    ms.set_device(args.device_target, None if launched_distributed() else args.device_id)


def init_data_parallel(args):
    """Under a launcher (msrun, rank table), join the collective group and train data parallel: gradients are
    averaged over the devices, the learning rate is the config's as it stands. Returns (rank, group_size)."""
    if not launched_distributed():
        if args.device_num > 1:
            raise UserInputError(f"device_num {args.device_num} needs one process per device: launch with "
                                 "scripts/run_distribute_train.sh (msrun or an Ascend rank table)")
        return 0, 1
    init()
    rank, group_size = get_rank(), get_group_size()
    if args.device_num != group_size:
        raise UserInputError(f"device_num is {args.device_num} but the launcher started {group_size} processes: "
                             "the global batch would not be the config's (pass --device_num)")
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    return rank, group_size


def sum_over_ranks(values):
    """The sums over all ranks of a few float64 numbers (counts, loss sums). Collectives on the CPU take
    float32 only: each value travels as float32 high and low parts, gathered and added in float64."""
    values = np.asarray(values, np.float64)
    high = values.astype(np.float32)
    low = (values - high).astype(np.float32)
    gathered = ops.AllGather()(ms.Tensor(np.concatenate([high, low])[None])).asnumpy().astype(np.float64)
    return gathered[:, :len(values)].sum(axis=0) + gathered[:, len(values):].sum(axis=0)
