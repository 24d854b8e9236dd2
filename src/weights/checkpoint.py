"""MindSpore checkpoint files: atomic writes, loads with clear errors, the model weights of a training checkpoint."""
import os
import tempfile

import mindspore as ms

from src.errors import UserInputError, first_line, make_folder

EMA_PREFIX = "ema."


def save_checkpoint(save_obj, path, append_dict=None, skip=None):
    """Write a .ckpt so that `path` is either the old file or the complete new one, never a part.

    `save_obj` is a Cell, or a {name: array or Tensor} dict; parameters whose name `skip` accepts are left out.
    """
    if isinstance(save_obj, dict):
        save_obj = [{"name": name, "data": value if isinstance(value, ms.Tensor) else ms.Tensor(value)}
                    for name, value in save_obj.items()]
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder, f"of checkpoint {os.path.basename(path)}")
    handle, tmp_path = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    os.close(handle)
    # MindSpore writes `.tmp-X.tmp` and renames it to `.tmp-X.ckpt`; a failed write can leave either
    leftovers = (tmp_path, tmp_path[:-len(".ckpt")] + ".tmp")
    try:
        ms.save_checkpoint(save_obj, tmp_path, append_dict=append_dict,
                           choice_func=None if skip is None else lambda name: not skip(name))
        os.replace(tmp_path, path)
    except OSError as err:  # a full disk, a quota, a permission: the older checkpoints stay as they were
        raise UserInputError(f"cannot write checkpoint {path}: {err}") from None
    finally:
        for leftover in leftovers:
            if os.path.exists(leftover):
                os.remove(leftover)


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
