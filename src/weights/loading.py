"""Weights into a built network, names and shapes checked."""
import mindspore as ms
import numpy as np

from src.errors import UserInputError
from src.models.layers import NOISE_STATE


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
