"""Resuming a run from a checkpoint written by CheckpointAndEval: weights, optimizer state, loss scale, EMA,
noise state, and where it stopped (global step, best accuracy so far)."""
import numpy as np

from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights


def resume_training(train_cell, path, steps_per_epoch, skip, log=print):
    """Load `path` into the train cell (all but the parameters `skip` accepts: frozen helper networks and lr
    schedules, which are rebuilt); returns (global step, (best_acc, best_epoch))."""
    checkpoint = load_checkpoint(path)
    load_weights(train_cell, checkpoint, path, skip=skip)
    start_step, best = resume_state(checkpoint, steps_per_epoch)
    epoch, step_in_epoch = divmod(start_step, steps_per_epoch)
    log(f"resumed from {path} in epoch {epoch + 1} after step {step_in_epoch} (global step {start_step})"
        if step_in_epoch else f"resumed from {path} at epoch {epoch}")
    return start_step, best


def resume_state(param_dict, steps_per_epoch):
    """(global step, (best_acc, best_epoch)) stored in a checkpoint written by CheckpointAndEval; a
    checkpoint without a step (older, or epoch-end only) resumes at the end of its epoch."""
    def scalar(name, default):
        value = param_dict.get(name)
        return default if value is None else np.asarray(value.asnumpy() if hasattr(value, "asnumpy") else value).item()

    step = scalar("step_num", None)
    if step is None:
        step = scalar("epoch_num", 0) * steps_per_epoch
    return int(step), (float(scalar("best_acc", 0.0)), int(scalar("best_epoch", 0)))
