"""Published checkpoints as {name: float32 array}, and their names mapped onto this repository's models.

Each family is recognised by its keys (the converters live beside the models): DALL-E's encoder, VQ-KD
tokenizers, ViTs (BEiT, BEiT v2, MAE, timm) and, for anything else, BiT.
"""
import os

import numpy as np

from src.errors import UserInputError
from src.models.beit.convert import convert_dalle_weights, convert_vqkd_weights, is_dalle_state_dict, is_vqkd_state_dict
from src.models.bit.convert import convert_bit_weights
from src.models.vit_convert import convert_vit_weights, is_vit_state_dict
from src.weights.torch_format import PickledModule, module_state_dict, read_torch_file

# a published checkpoint often wraps its state dict
WRAPPER_KEYS = ("model", "module", "state_dict")


def read_safetensors(path):
    """{name: array} of a .safetensors file (a header and raw tensors: nothing in it can run), through the
    safetensors package's NumPy API; bfloat16, which NumPy lacks, widened to float32 from its bytes."""
    import json
    import struct

    from safetensors import SafetensorError, safe_open

    tensors, bfloat16 = {}, []
    try:
        with safe_open(path, framework="np") as tensors_file:  # checks the header and the offsets
            for key in tensors_file.keys():
                try:
                    tensors[key] = tensors_file.get_tensor(key)
                except TypeError:  # "data type 'bfloat16' not understood"
                    bfloat16.append(key)
    except (SafetensorError, OSError) as err:
        raise UserInputError(f"cannot read {path} as .safetensors: {err}") from None
    if bfloat16:
        with open(path, "rb") as raw:
            (header_size,) = struct.unpack("<Q", raw.read(8))
            header = json.loads(raw.read(header_size))
            data = raw.read()
        for key in bfloat16:
            entry = header[key]
            if entry["dtype"] != "BF16":
                raise UserInputError(f"{path}: tensor {key} has dtype {entry['dtype']}, which cannot be read")
            begin, end = entry["data_offsets"]
            widened = np.frombuffer(data[begin:end], np.uint16).astype(np.uint32) << 16
            tensors[key] = widened.view(np.float32).reshape(entry["shape"])
    return tensors


def read_published_weights(path):
    """{name: float32 array} of every tensor in a .npz, a .safetensors file, a PyTorch checkpoint or a pickled
    module (.pkl)."""
    if not os.path.isfile(path):
        raise UserInputError(f"input checkpoint not found: {path}")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot read {path} as .npz: {err}") from None
    if path.endswith(".safetensors"):
        return {key: value.astype(np.float32) for key, value in read_safetensors(path).items()}
    if path.endswith(".pkl"):
        module = read_torch_file(path, modules=True, stub_packages=("dall_e",))
        if not isinstance(module, PickledModule):
            raise UserInputError(f"{path} holds no pickled module")
        checkpoint = module_state_dict(module)
    else:
        checkpoint = read_torch_file(path)
        for wrapper_key in WRAPPER_KEYS:
            if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper_key), dict):
                checkpoint = checkpoint[wrapper_key]
                break
    if not isinstance(checkpoint, dict):
        raise UserInputError(f"{path} holds no state dict")
    return {key: value.astype(np.float32) for key, value in checkpoint.items() if isinstance(value, np.ndarray)}


def published_family(weights):
    """'dall_e', 'vqkd', 'vit' or 'bit': which converter the published names are for."""
    for family, matches in (("dall_e", is_dalle_state_dict), ("vqkd", is_vqkd_state_dict), ("vit", is_vit_state_dict)):
        if matches(weights):
            return family
    return "bit"


def convert_published_weights(published, network, show_progress=False):
    """Published {name: array} -> {parameter name of `network`: array}, tables resized for a ViT."""
    family = published_family(published)
    if family == "dall_e":
        return convert_dalle_weights(published)
    if family == "vqkd":
        return convert_vqkd_weights(published)
    if family == "vit":
        if not hasattr(network, "patch_embed"):
            raise UserInputError(f"these are ViT weights; {type(network).__name__} is not a ViT")
        return convert_vit_weights(published, network, show_progress=show_progress)
    return convert_bit_weights(published, show_progress=show_progress)
