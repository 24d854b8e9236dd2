"""Vision-transformer building blocks shared by BEiT and MAE.

Patch embedding, attention with optional relative position bias (BEiT's q/v biases with a zero k
bias), MLP, drop path and layer scale. Parameter names follow unilm / timm (`attn.qkv.weight`,
`attn.q_bias`, `attn.relative_position_bias_table`, `gamma_1`, `mlp.fc1`), so published weights map
by name; only LayerNorm's weight / bias are called gamma / beta in MindSpore.
"""
import math
import zlib

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Constant, TruncatedNormal, Zero, initializer

from src.ops.conv import Conv2d
from src.ops.cpu_kernels import (
    GELU,
    BiasAdd,
    ChannelScale,
    Dense,
    LayerNorm,
    ScaledDotProductAttention,
)


def trunc_normal(shape, std=0.02):
    return initializer(TruncatedNormal(std), shape, ms.float32)


def dense(in_features, out_features, has_bias=True):
    """nn.Dense initialised as the ViT papers: truncated normal (std 0.02) weights, zero bias."""
    return Dense(in_features, out_features, weight_init=TruncatedNormal(0.02), bias_init="zeros",
                 has_bias=has_bias)


def layer_norm(dim, eps=1e-6):
    return LayerNorm(dim, eps=eps)


class PatchEmbed(nn.Cell):
    """Image -> (B, num_patches, embed_dim) with a patch-sized, patch-strided convolution (conv.py's: on the
    CPU a fused kernel writing the tokens directly, where MindSpore's CPU convolution is ~60x slower at
    16x16 / stride 16 and the transpose to tokens took 4-8 ms of a tiny BEiT's 110 ms inference)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_size = patch_size
        self.proj = Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, pad_mode="valid", has_bias=True,
                           weight_init=TruncatedNormal(0.02), bias_init="zeros", input_grad=False, tokens=True)
        self.bias_add = BiasAdd()

    def construct(self, x):
        x = ops.stop_gradient(x)  # images: no gradient to compute
        tokens = self.proj.convolve(x, self.proj.weight.astype(x.dtype))
        # the bias after the tokens are formed: the fused addition sums its gradient in one pass
        return self.bias_add(tokens, self.proj.bias.astype(x.dtype))


NOISE_STATE = "noise_calls"
_UINT32 = 0xFFFFFFFF


def seed_noise(network, seed):
    """Give each ResumableUniform of `network` its stream, hashed from `seed` and the cell's path in the network
    (e.g. "blocks.3.drop_path.noise"): the same network draws the same noise in any process, whatever was built
    before it. create_model seeds with 0; training passes seed + rank, so data-parallel ranks draw different
    drop-path and MAE masks."""
    for name, cell in network.cells_and_names():
        if isinstance(cell, ResumableUniform):
            cell.stream = zlib.crc32(f"{int(seed)}:{name}".encode())
    return network


def _hash32(h):
    """A 32-bit integer hash (two xor-shift-multiply rounds) of the low 32 bits of `h`, in int64 so that no
    product overflows. Odd multipliers before it keep distinct indices and call counts distinct."""
    h = ops.bitwise_and(h, _UINT32)
    for _ in range(2):
        h = ops.bitwise_and(ops.bitwise_xor(h, ops.bitwise_right_shift(h, 16)) * 0x45D9F3B, _UINT32)
    return ops.bitwise_xor(h, ops.bitwise_right_shift(h, 16))


class ResumableUniform(nn.Cell):
    """Uniform [0, 1) noise of a given shape whose whole state is one int Parameter, `noise_calls`.

    MindSpore's CPU random kernels keep their state inside the kernel, where no checkpoint reaches it, so
    a resumed run would draw other masks than an uninterrupted one. Here each draw hashes (stream, call
    count, element index); the call count is saved and restored with the weights, which makes resuming
    exact. Each cell draws its own stream (see seed_noise).
    """

    def __init__(self, stream=0):
        super().__init__()
        self.stream = stream
        self.noise_calls = ms.Parameter(ms.Tensor(0, ms.int64), name=NOISE_STATE, requires_grad=False)

    def construct(self, shape):
        key = _hash32(self.noise_calls * 0x9E3779B + self.stream)
        index = ops.arange(int(np.prod(shape)), dtype=ms.int64)
        bits = _hash32(ops.bitwise_xor(index * 0x2545F49, key))
        noise = ops.bitwise_right_shift(bits, 8).astype(ms.float32) * (1.0 / (1 << 24))  # 24 bits: exact in fp32
        noise = ops.depend(noise, ops.assign_add(self.noise_calls, ms.Tensor(1, ms.int64)))
        return noise.reshape(shape)


class DropPath(nn.Cell):
    """Stochastic depth: drop a sample's whole residual branch with probability `drop_prob`, scaling the
    kept ones by 1 / (1 - drop_prob)."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.keep_prob = 1.0 - drop_prob
        self.noise = ResumableUniform() if drop_prob > 0 else None

    def construct(self, x):
        if not self.training or self.noise is None:
            return x
        keep = ops.floor(self.keep_prob + self.noise((x.shape[0],) + (1,) * (x.ndim - 1)))
        return x * (keep / self.keep_prob).astype(x.dtype)


class Mlp(nn.Cell):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = dense(dim, hidden_dim)
        self.act = GELU()
        self.fc2 = dense(hidden_dim, dim)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


def relative_position_index(window_size):
    """(N+1, N+1) indices into a ((2Wh-1)(2Ww-1) + 3)-row bias table; the last 3 rows are for the
    cls token (cls->token, token->cls, cls->cls), as BEiT."""
    height, width = window_size
    num_distances = (2 * height - 1) * (2 * width - 1) + 3
    coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    relative[:, :, 0] += height - 1
    relative[:, :, 1] += width - 1
    relative[:, :, 0] *= 2 * width - 1
    index = np.zeros((height * width + 1,) * 2, dtype=np.int32)
    index[1:, 1:] = relative.sum(-1)
    index[0, :] = num_distances - 3
    index[:, 0] = num_distances - 2
    index[0, 0] = num_distances - 1
    return index


def bias_table(window_size, num_heads):
    """A zero-initialised relative position bias table and its flattened (N+1)^2 index."""
    num_distances = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
    table = ms.Parameter(initializer(Zero(), (num_distances, num_heads), ms.float32),
                         name="relative_position_bias_table")
    return table, ms.Tensor(relative_position_index(window_size).reshape(-1))


def lookup_bias(table, index, tokens):
    """(heads, tokens, tokens) bias from a table and a flattened index."""
    return ops.gather(table, index, 0).reshape(tokens, tokens, -1).transpose(2, 0, 1)


class RelativePositionBias(nn.Cell):
    """One relative position bias shared by all layers (BEiT's `use_shared_rel_pos_bias`)."""

    def __init__(self, window_size, num_heads):
        super().__init__()
        self.relative_position_bias_table, self.relative_position_index = bias_table(window_size, num_heads)
        self.num_tokens = window_size[0] * window_size[1] + 1

    def construct(self):
        return lookup_bias(self.relative_position_bias_table, self.relative_position_index, self.num_tokens)


class Attention(nn.Cell):
    """Multi-head self-attention with a qkv bias: "qv" (BEiT: learned q and v biases, zero k bias), True
    (one learned bias of the qkv projection) or False; optional per-layer relative position bias.

    A bias shared by all layers (BEiT's `use_shared_rel_pos_bias`) comes in as `shared_bias`.
    """

    def __init__(self, dim, num_heads, qkv_bias=True, window_size=None):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = dense(dim, dim * 3, has_bias=qkv_bias is True)
        self.use_qv_bias = qkv_bias == "qv"
        if self.use_qv_bias:
            self.q_bias = ms.Parameter(initializer(Zero(), (dim,), ms.float32), name="q_bias")
            self.v_bias = ms.Parameter(initializer(Zero(), (dim,), ms.float32), name="v_bias")
        self.use_rel_pos_bias = window_size is not None
        if self.use_rel_pos_bias:
            self.relative_position_bias_table, self.relative_position_index = bias_table(window_size, num_heads)
            self.num_tokens = window_size[0] * window_size[1] + 1
        self.proj = dense(dim, dim)
        self.attention = ScaledDotProductAttention(num_heads, (dim // num_heads) ** -0.5)

    def position_bias(self, shared_bias):
        """The (heads, N, N) bias of the attention logits: this layer's, the shared one, both, or None."""
        if not self.use_rel_pos_bias:
            return shared_bias
        bias = lookup_bias(self.relative_position_bias_table, self.relative_position_index, self.num_tokens)
        return bias if shared_bias is None else bias + shared_bias

    def construct(self, x, shared_bias=None):
        if self.use_qv_bias:  # k has no bias (BEiT)
            qkv = self.qkv.affine(x, ops.concat((self.q_bias, ops.zeros_like(self.q_bias), self.v_bias)))
        else:
            qkv = self.qkv(x)
        return self.proj(self.attention(qkv, self.position_bias(shared_bias)))


class Block(nn.Cell):
    """Pre-norm transformer block with optional layer scale (`init_values` -> gamma_1, gamma_2)."""

    recompute_unit = True  # see recompute_units

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, drop_path=0.0, init_values=None,
                 window_size=None):
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, window_size=window_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.use_layer_scale = bool(init_values)
        if self.use_layer_scale:
            self.gamma_1 = ms.Parameter(initializer(Constant(init_values), (dim,), ms.float32), name="gamma_1")
            self.gamma_2 = ms.Parameter(initializer(Constant(init_values), (dim,), ms.float32), name="gamma_2")
            self.layer_scale = ChannelScale()

    def construct(self, x, shared_bias=None):
        attn = self.attn(self.norm1(x), shared_bias)
        if self.use_layer_scale:
            x = x + self.drop_path(self.layer_scale(attn, self.gamma_1))
            return x + self.drop_path(self.layer_scale(self.mlp(self.norm2(x)), self.gamma_2))
        x = x + self.drop_path(attn)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def recompute_units(network):
    """Activation checkpointing: every cell marked `recompute_unit` (transformer blocks, BiT units) keeps only
    its input for the backward pass and recomputes the rest there. Returns how many cells were marked."""
    units = [cell for _, cell in network.cells_and_names() if getattr(cell, "recompute_unit", False)]
    for cell in units:
        cell.recompute()
    return len(units)


def frozen(network, prefix):
    """`network` with gradients off and parameter names under `prefix`: a helper (tokenizer, teacher)
    inside a loss cell, kept apart from the trained model's names in checkpoints."""
    for param in network.get_parameters():
        param.requires_grad = False
    network.update_parameters_name(prefix)
    return network


def drop_path_rates(rate, depth):
    """Stochastic depth rising linearly from 0 at the first block to `rate` at the last."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def rescale_residual_projections(blocks, first_layer=1):
    """Divide each block's output projections by sqrt(2 * layer), layers numbered from `first_layer`, as BEiT's
    `fix_init_weight`."""
    for layer, block in enumerate(blocks, start=first_layer):
        for param in (block.attn.proj.weight, block.mlp.fc2.weight):
            param.set_data(param / math.sqrt(2.0 * layer))
