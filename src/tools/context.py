"""MindSpore execution context and data-parallel initialisation."""
import os

import mindspore as ms
from mindspore.communication import get_group_size, get_rank, init

from src.errors import UserInputError

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")


def launched_distributed():
    """True under msrun or a rank-table launch (the launcher sets these variables)."""
    return any(int(os.environ.get(name, "1")) > 1 for name in ("MS_WORKER_NUM", "RANK_SIZE"))


def init_context(args):
    """Set mode and device; with device_num > 1 (or under a launcher) start data parallel.

    Returns (rank, group_size).
    """
    if args.device_target not in DEVICE_TARGETS:
        raise UserInputError(f"unknown device_target '{args.device_target}', expected one of {list(DEVICE_TARGETS)}")
    ms.set_context(mode=ms.GRAPH_MODE if args.graph_mode else ms.PYNATIVE_MODE)
    ms.set_device(args.device_target, None if launched_distributed() else args.device_id)
    if args.device_num <= 1 and not launched_distributed():
        return 0, 1
    init()
    rank, group_size = get_rank(), get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    return rank, group_size
