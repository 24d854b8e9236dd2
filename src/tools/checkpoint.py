"""Checkpoint files: atomic writes, loads with clear errors, and weight loading for fine-tuning."""
import os
import tempfile

import mindspore as ms
import numpy as np

from src.errors import UserInputError, first_line
from src.models.layers import NOISE_STATE

EMA_PREFIX = "ema."


def save_checkpoint(save_obj, path, append_dict=None, skip=None):
    """Write a .ckpt so that `path` is either the old file or the complete new one, never a part.

    `save_obj` is a Cell, or a {name: array or Tensor} dict; parameters whose name `skip` accepts are left out.
    """
    if isinstance(save_obj, dict):
        save_obj = [{"name": name, "data": value if isinstance(value, ms.Tensor) else ms.Tensor(value)}
                    for name, value in save_obj.items()]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    os.close(handle)
    try:
        ms.save_checkpoint(save_obj, tmp_path, append_dict=append_dict,
                           choice_func=None if skip is None else lambda name: not skip(name))
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def load_checkpoint(path):
    """{name: Parameter} of a .ckpt file; a missing or unreadable file is a UserInputError."""
    if not path or not os.path.isfile(path):
        raise UserInputError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(os.fspath(path))
    except Exception as err:  # MindSpore raises ValueError/RuntimeError variants for bad files
        raise UserInputError(f"cannot read checkpoint {path} (corrupt or not a MindSpore .ckpt): "
                             f"{first_line(err)}") from None


def network_weights(param_dict, use_ema=False):
    """The model weights of a training checkpoint: the EMA copies when asked for and present."""
    weights = {name: value for name, value in param_dict.items() if not name.startswith(EMA_PREFIX)}
    if use_ema:
        for name, value in param_dict.items():
            if name.startswith(EMA_PREFIX):
                weights[name[len(EMA_PREFIX):]] = value
    return weights


def load_weights(network, weights, source, head_prefixes=(), missing_ok=(), skip=None, log=print):
    """Load {name: array/Parameter} into `network`, checking names and shapes.

    Parameters under `head_prefixes` whose shape differs (another class count) are left at their
    initial values with a message, for fine-tuning; any other mismatch or missing weight is an error.
    Parameters under `missing_ok` may be absent (a pretraining checkpoint has no classifier) and keep
    their initial values. Extra entries in `weights` that the network lacks (optimizer state, EMA, an MAE
    decoder) are ignored. Parameters whose name `skip` accepts (frozen helper networks, loaded from their own
    files) are neither looked for nor loaded.
    """
    to_load = {}
    dropped_head = []
    missing = []
    for param in network.get_parameters():
        if skip is not None and skip(param.name):
            continue
        if param.name not in weights:
            if param.name.endswith(NOISE_STATE):  # a published checkpoint has no noise state: draws start anew
                continue
            if param.name.startswith(tuple(missing_ok)):
                missing.append(param.name)
                continue
            raise UserInputError(f"{source} has no weight for '{param.name}' (is it for another architecture?)")
        value = weights[param.name]
        shape = tuple(value.shape)
        if shape != tuple(param.shape):
            if param.name.startswith(tuple(head_prefixes)):
                dropped_head.append(param.name)
                continue
            raise UserInputError(f"{source}: '{param.name}' has shape {shape}, the model expects {tuple(param.shape)}")
        array = value.asnumpy() if isinstance(value, ms.Tensor) else np.asarray(value)
        to_load[param.name] = ms.Parameter(ms.Tensor(array.astype(ms.dtype_to_nptype(param.dtype))), name=param.name)
    if dropped_head:
        log(f"{source}: head {', '.join(dropped_head)} has another class count; it is initialised anew")
    if missing:
        log(f"{source} has no {', '.join(missing)}; initialised anew")
    ms.load_param_into_net(network, to_load, strict_load=True)
    return dropped_head
