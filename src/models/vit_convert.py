"""Map published ViT state dicts (unilm BEiT / BEiT v2, facebookresearch/mae, timm `beit_*` and
`vit_*`) onto the parameter names of VisionTransformer and MaskedAutoencoderViT.

Names match already (all follow timm / unilm) except LayerNorm's weight / bias (gamma / beta here).
`relative_position_index` buffers are dropped (rebuilt by the model). A shared
`rel_pos_bias.relative_position_bias_table` is copied into every block when the target model has
per-block tables. When the target resolution differs, absolute position embeddings are resized
bicubically and relative position tables with the geometric-progression grid of unilm, linearly as
timm does without SciPy.
"""
import re

import numpy as np

from src.errors import UserInputError
from src.runtime.progress import progress

SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
# norm, norm1, fc_norm, cls_pt_norm, decoder_norm: every LayerNorm of these models is named so
LAYER_NORMS = re.compile(r"(^|\.)((?:[a-z_]+_)?norm\d?)\.(weight|bias)$")


def is_vit_state_dict(weights):
    return "cls_token" in weights and any(key.endswith("attn.qkv.weight") for key in weights)


def rename_layer_norm(key):
    """torch LayerNorm weight / bias -> MindSpore gamma / beta."""
    match = LAYER_NORMS.search(key)
    if match:
        return key[:match.start(3)] + ("gamma" if match.group(3) == "weight" else "beta")
    return key


def _geometric_positions(src, dst):
    """unilm's source positions: spaced by a geometric progression so the outer ones reach dst // 2."""
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        ratio = (left + right) / 2.0
        if (1.0 - ratio ** (src // 2)) / (1.0 - ratio) > dst // 2:
            right = ratio
        else:
            left = ratio
    distances, current = [], 1.0
    for i in range(src // 2):
        distances.append(current)
        current += ratio ** (i + 1)
    return np.array([-d for d in reversed(distances)] + [0.0] + distances)


def resize_rel_pos_table(table, new_window):
    """(num_distances, heads) table for another window size; the 3 cls rows are kept as they are."""
    heads = table.shape[1]
    src = int(round(np.sqrt(table.shape[0] - 3)))
    dst_h, dst_w = 2 * new_window[0] - 1, 2 * new_window[1] - 1
    if (src, src) == (dst_h, dst_w):
        return table
    grid, extra = table[:-3].reshape(src, src, heads), table[-3:]
    ys, xs = _geometric_positions(src, dst_h), _geometric_positions(src, dst_w)
    target_y = np.arange(-(dst_h // 2), dst_h // 2 + 0.1)
    target_x = np.arange(-(dst_w // 2), dst_w // 2 + 0.1)
    # bilinear on the rectilinear source grid: along x for every source row, then along y
    along_x = np.stack([[np.interp(target_x, xs, grid[row, :, head]) for head in range(heads)]
                        for row in range(src)])                       # (src, heads, dst_w)
    resized = np.stack([[np.interp(target_y, ys, along_x[:, head, col]) for col in range(dst_w)]
                        for head in range(heads)])                    # (heads, dst_w, dst_h)
    resized = resized.transpose(2, 1, 0).reshape(dst_h * dst_w, heads)
    return np.concatenate([resized, extra]).astype(np.float32)


def _cubic(x, a=-0.5):
    """Keys' cubic convolution kernel with a = -0.5, the one antialiased resizing uses (PIL, PyTorch)."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _antialiased_bicubic_weights(in_size, out_size):
    """(out_size, in_size) matrix of antialiased bicubic resampling with half-pixel centres: when shrinking,
    the kernel is stretched by the scale so that every input contributes (PIL's and torch's antialias=True)."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    weights = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps = _cubic((np.arange(first, last) - center + 0.5) / stretch)
        weights[i, first:last] = taps / taps.sum()
    return weights


def resize_pos_embed(pos_embed, new_grid):
    """(1, 1 + H*W, D) absolute position embedding for another grid (cls token kept): antialiased bicubic, as
    timm's resample_abs_pos_embed (torch.nn.functional.interpolate with antialias=True), in NumPy."""
    old = int(round(np.sqrt(pos_embed.shape[1] - 1)))
    if (old, old) == tuple(new_grid):
        return pos_embed
    tokens = pos_embed[0, 1:].reshape(old, old, -1).astype(np.float64)
    rows, cols = (_antialiased_bicubic_weights(old, size) for size in new_grid)
    tokens = np.einsum("ih,hwd->iwd", rows, tokens)
    tokens = np.einsum("jw,iwd->ijd", cols, tokens).reshape(1, -1, pos_embed.shape[-1])
    return np.concatenate([pos_embed[:, :1], tokens], axis=1).astype(np.float32)


def convert_vit_weights(weights, network, show_progress=False):
    """{published name: array} -> {parameter name: array} fitted to `network` (its grid and tables).

    Keys the network lacks (an MAE decoder when fine-tuning) are left for the loader to ignore. Resizing
    the tables of a large model takes a while: `show_progress` reports it on stderr.
    """
    if not is_vit_state_dict(weights):
        raise UserInputError("no ViT weights found: expected keys like 'cls_token' and 'blocks.0.attn.qkv.weight'")
    target = {param.name: tuple(param.shape) for param in network.get_parameters()}
    grid = network.patch_embed.grid_size
    converted = {}
    for key, value in progress(weights.items(), len(weights), "converting", show=show_progress):
        if key.endswith("relative_position_index"):
            continue
        name = rename_layer_norm(key)
        value = np.asarray(value, dtype=np.float32)
        if name == "pos_embed":
            value = resize_pos_embed(value, grid)
        elif name.endswith("relative_position_bias_table"):
            value = resize_rel_pos_table(value, grid)
        converted[name] = value
    if SHARED_TABLE in converted and SHARED_TABLE not in target:
        shared = converted.pop(SHARED_TABLE)
        for name in target:
            if name.endswith("attn.relative_position_bias_table"):
                converted.setdefault(name, shared)
    return converted
