"""Map published BiT weights onto ResNetV2's parameter names.

Three layouts are published:
- the official .npz (TF names, HWIO kernels): `resnet/block1/unit01/a/standardized_conv2d/kernel`;
- big_transfer's PyTorch state dict: `body.block1.unit01.conv1.weight`, `root.conv.weight`;
- timm's resnetv2 state dict: `stages.0.blocks.0.conv1.weight`, `stem.conv.weight`, `head.fc.weight`.
"""
import re

import numpy as np

from src.errors import UserInputError
from src.runtime.progress import progress

_NPZ_CONV = "standardized_conv2d/kernel"
_NPZ_UNIT_PARTS = {"a": "1", "b": "2", "c": "3"}


def is_bit_npz(weights):
    return any(key.startswith("resnet/") for key in weights)


def _hwio_to_oihw(array):
    return np.transpose(array, (3, 2, 0, 1)) if array.ndim == 4 else array


def _npz_name(key):
    """Our parameter name for one key of the official .npz, or None for keys we do not use."""
    key = key[len("resnet/"):]
    if key == f"root_block/{_NPZ_CONV}":
        return "root.conv.weight"
    if key.startswith("group_norm/"):
        return {"gamma": "head.gn.gamma", "beta": "head.gn.beta"}[key.split("/")[1]]
    if key == "head/conv2d/kernel":
        return "head.conv.weight"
    if key == "head/conv2d/bias":
        return "head.conv.bias"
    match = re.fullmatch(r"(block\d)/(unit\d+)/([abc])/(.+)", key)
    if not match:
        return None
    block, unit, part, leaf = match.groups()
    prefix = f"body.{block}.{unit}."
    if leaf == _NPZ_CONV:
        return f"{prefix}conv{_NPZ_UNIT_PARTS[part]}.weight"
    if leaf == f"proj/{_NPZ_CONV}":
        return f"{prefix}downsample.weight"
    if leaf in ("group_norm/gamma", "group_norm/beta"):
        return f"{prefix}gn{_NPZ_UNIT_PARTS[part]}.{leaf.split('/')[1]}"
    return None


def _torch_name(key):
    """Our parameter name for a big_transfer or timm PyTorch key, or None for unused keys."""
    key = key[len("module."):] if key.startswith("module.") else key
    timm_match = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if timm_match:
        stage, block, rest = timm_match.groups()
        rest = rest.replace("downsample.conv.", "downsample.")
        rest = re.sub(r"^norm(\d)\.", r"gn\1.", rest)
        key = f"body.block{int(stage) + 1}.unit{int(block) + 1:02d}.{rest}"
    else:
        key = {"stem.conv.weight": "root.conv.weight", "norm.weight": "head.gn.weight",
               "norm.bias": "head.gn.bias", "head.fc.weight": "head.conv.weight",
               "head.fc.bias": "head.conv.bias"}.get(key, key)
    # GroupNorm's affine parameters are gamma / beta in MindSpore
    if re.search(r"(\.gn\d?)\.(weight|bias)$", key):
        key = key[:key.rindex(".")] + (".gamma" if key.endswith("weight") else ".beta")
    if key.startswith(("root.", "body.", "head.")):
        return key
    return None


def convert_bit_weights(weights, show_progress=False):
    """{published name: array} -> {ResNetV2 parameter name: float32 array (OIHW kernels)}; `show_progress`
    reports on stderr (the R152x4 .npz holds 3.7 GB)."""
    from_npz = is_bit_npz(weights)
    converted = {}
    for key, value in progress(weights.items(), len(weights), "converting", show=show_progress):
        name = _npz_name(key) if from_npz else _torch_name(key)
        if name is None:
            continue
        array = np.asarray(value, dtype=np.float32)
        converted[name] = _hwio_to_oihw(array) if from_npz else array
    if "root.conv.weight" not in converted:
        raise UserInputError("no BiT weights found: expected keys like 'resnet/root_block/...', "
                             "'root.conv.weight' or 'stem.conv.weight'")
    for name in ("head.gn.gamma", "head.gn.beta", "head.conv.bias"):
        if name in converted:
            converted[name] = converted[name].reshape(-1)
    return converted
