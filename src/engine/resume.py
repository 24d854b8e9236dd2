"""Resuming a run from a checkpoint written by CheckpointAndEval: weights, optimizer state, loss scale, EMA,
noise state, and where it stopped (global step, best accuracy so far); `--resume auto` finds the newest."""
import os

import numpy as np

from src.engine.callbacks import checkpoint_position
from src.engine.train_one_step import STOP_REQUESTED
from src.errors import UserInputError
from src.runtime.modelarts import import_moxing
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights


def _newest_first(folder, names, log):
    """The checkpoint names among `names`, newest (highest epoch, then step in the epoch) first."""
    positions = {}
    for name in names:
        if name.startswith(".tmp"):
            log(f"warning: resume auto: passing over {folder}/{name}, the temporary file of an unfinished write")
        elif checkpoint_position(name):
            positions[name] = checkpoint_position(name)
    return sorted(positions, key=positions.get, reverse=True)


def _read(path, log):
    """The checkpoint at `path`, or None (with a warning) when it cannot be read."""
    try:
        return load_checkpoint(path)
    except UserInputError as err:
        log(f"warning: resume auto: passing over {err}")
        return None


def newest_checkpoint(train_url, log=print):
    """(path, contents) of the newest complete checkpoint of `train_url/ckpt_0000`, or (None, None). Temporary
    files of an interrupted write and files that cannot be read are passed over with a warning."""
    folder = os.path.join(train_url, "ckpt_0000")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    for name in _newest_first(folder, names, log):
        path = os.path.join(folder, name)
        checkpoint = _read(path, log)
        if checkpoint is not None:
            return path, checkpoint
    return None, None


def fetch_newest_checkpoint(remote_train_url, local_folder, log=print):
    """`newest_checkpoint` of a train_url on OBS (ModelArts): the newest readable checkpoint of its ckpt_0000,
    copied into `local_folder` (only that one), and its contents; or (None, None)."""
    mox = import_moxing()
    remote = f"{remote_train_url.rstrip('/')}/ckpt_0000"
    names = mox.file.list_directory(remote) if mox.file.exists(remote) else []
    os.makedirs(local_folder, exist_ok=True)
    for name in _newest_first(remote, names, log):
        local = os.path.join(local_folder, name)
        mox.file.copy(f"{remote}/{name}", local)
        checkpoint = _read(local, log)
        if checkpoint is not None:
            return local, checkpoint
        os.remove(local)
    return None, None


def resume_training(train_cell, path, steps_per_epoch, skip, log=print, checkpoint=None):
    """Load `path` (or its `checkpoint` contents, when already read) into the train cell (all but the parameters
    `skip` accepts: frozen helper networks and lr schedules, which are rebuilt); returns (global step,
    (best_acc, best_epoch))."""
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    start_step, best = resume_state(checkpoint, steps_per_epoch, path)
    load_weights(train_cell, checkpoint, path, skip=lambda name: name == STOP_REQUESTED or skip(name))
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    log(f"resumed from {path} in epoch {epoch + 1} after step {step_in_epoch} (global step {start_step})"
        if step_in_epoch else f"resumed from {path} at epoch {epoch}")
    return start_step, best


def resume_state(param_dict, steps_per_epoch, source="the checkpoint"):
    """(global step, (best_acc, best_epoch)) stored in a checkpoint written by CheckpointAndEval; a
    checkpoint without a step (older, or epoch-end only) resumes at the end of its epoch. A checkpoint whose step
    falls in another epoch at this run's `steps_per_epoch` (another batch size, device count or accum_steps) is
    refused: the epochs, the lr schedule and the data order would not continue the run."""
    def scalar(name, default):
        value = param_dict.get(name)
        return default if value is None else np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value).item()

    step, epoch = scalar("step_num", None), scalar("epoch_num", None)
    best = (float(scalar("best_acc", 0.0)), int(scalar("best_epoch", 0)))
    if step is None:
        return int((epoch or 0) * steps_per_epoch), best
    step = int(step)
    if epoch is not None and step > 0 and not (epoch - 1) * steps_per_epoch < step <= epoch * steps_per_epoch:
        raise UserInputError(f"{source} was saved in epoch {int(epoch)} at global step {step}, which at this run's "
                             f"{steps_per_epoch} steps per epoch is in epoch {-(-step // steps_per_epoch)}: resume "
                             "with the batch_size, device count and accum_steps it was trained with")
    return step, best
