"""Training tasks, one class each, looked up by the config key `task` here and nowhere else.

    classification   (image, label)                             -> criterion(model(image), label)
    mae_pretrain     (image, label)                             -> the MAE's own loss
    beit_pretrain    (image, tokenizer_image, bool_masked_pos)  -> masked token cross-entropy
    vqkd_train       (image, label)                             -> VQ-KD distillation loss
"""
from src.args import DEFAULTS
from src.errors import UserInputError
from src.models import all_config_keys, model_config_keys
from src.tasks.base import Task
from src.tasks.beit_pretrain import BeitPretrain
from src.tasks.classification import Classification
from src.tasks.mae_pretrain import MaePretrain
from src.tasks.vqkd_train import VqkdTrain

TASKS = {task.name: task for task in (Classification, MaePretrain, BeitPretrain, VqkdTrain)}


def create_task(args):
    """The task object of `args.task`, its config checked."""
    if args.task not in TASKS:
        raise UserInputError(f"unknown task '{args.task}', expected one of {list(TASKS)}")
    task = TASKS[args.task](args)
    task.check()
    return task


# read by the data pipeline whatever the task and model
DATA_KEYS = {"image_size", "num_classes"}


def unused_config_keys(args, task):
    """Keys of models or tasks set away from their defaults that neither `task` nor the model of `args.arch`
    reads (a config may carry keys of several tasks, e.g. drop_path_rate in an MAE pretraining file)."""
    specific = (all_config_keys() | {key for cls in TASKS.values() for key in cls.config_keys}) - DATA_KEYS
    read = model_config_keys(args.arch) | task.config_keys
    return sorted(key for key in specific - read if getattr(args, key) != DEFAULTS[key][0])


__all__ = ["TASKS", "Task", "create_task", "unused_config_keys"]
