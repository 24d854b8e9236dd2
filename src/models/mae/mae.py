"""MAE: masked-autoencoder pretraining, as facebookresearch/mae `models_mae.py`.

The encoder sees only the visible patches (a random `1 - mask_ratio` of them, chosen per sample
by sorting uniform noise); a light decoder gets the encoded patches back in place, mask tokens
for the rest, and predicts the pixels of every patch. The loss is the mean squared error on the
masked patches only, against per-patch normalised pixels with `norm_pix_loss`. Position
embeddings are fixed 2-D sin-cos tables.
"""
import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal, XavierUniform, initializer

from src.models.layers import Block, PatchEmbed, ResumableUniform, dense, layer_norm
from src.models.registry import model_family, register_model
from src.ops.cpu_kernels import GatherRows, Patchify, RowMeanSquaredError, Standardize


def sincos_1d(embed_dim, positions):
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    angles = np.outer(positions.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(embed_dim, grid_size, cls_token=True):
    """(1 + grid^2, D) fixed position embedding: half the channels encode rows, half columns; zeros for cls."""
    grid_w, grid_h = np.meshgrid(np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64))
    table = np.concatenate([sincos_1d(embed_dim // 2, grid_w), sincos_1d(embed_dim // 2, grid_h)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, embed_dim)), table])
    return table.astype(np.float32)


def fixed_embedding(table, name):
    return ms.Parameter(ms.Tensor(table[None]), name=name, requires_grad=False)


def unpatchify(patches, patch_size, channels=3):
    """(N, L, p*p*3) -> (N, 3, H, W)."""
    batch, length, _ = patches.shape
    grid = int(round(length ** 0.5))
    x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return x.transpose(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid * patch_size, grid * patch_size)


class MaskedAutoencoderViT(nn.Cell):
    """MAE with a ViT encoder; `construct(images)` returns (loss, pred, mask)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=False,
                 mask_ratio=0.75):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        grid = self.patch_embed.grid_size[0]
        self.num_keep = int(num_patches * (1 - mask_ratio))  # fixed, so the graph has static shapes
        self.noise = ResumableUniform()
        self.mask_ratio = mask_ratio
        self.cls_token = ms.Parameter(initializer(Normal(0.02), (1, 1, embed_dim), ms.float32), name="cls_token")
        self.pos_embed = fixed_embedding(sincos_2d(embed_dim, grid), "pos_embed")
        self.blocks = nn.CellList([Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = layer_norm(embed_dim)

        self.decoder_embed = dense(embed_dim, decoder_embed_dim)
        self.mask_token = ms.Parameter(initializer(Normal(0.02), (1, 1, decoder_embed_dim), ms.float32),
                                       name="mask_token")
        self.decoder_pos_embed = fixed_embedding(sincos_2d(decoder_embed_dim, grid), "decoder_pos_embed")
        self.decoder_blocks = nn.CellList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True)
                                           for _ in range(decoder_depth)])
        self.decoder_norm = layer_norm(decoder_embed_dim)
        self.decoder_pred = dense(decoder_embed_dim, patch_size * patch_size * in_chans)
        self.norm_pix_loss = norm_pix_loss
        self.patchify = Patchify(patch_size)
        self.standardize = Standardize((patch_size * patch_size * in_chans,), eps=1e-6, unbiased=True)
        self.squared_error = RowMeanSquaredError()
        self.gather_rows = GatherRows()
        self._init_weights()

    def _init_weights(self):
        """As MAE: xavier-uniform linear layers, and the patch projection as if it were one."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Dense):
                cell.weight.set_data(initializer(XavierUniform(), cell.weight.shape, ms.float32))
        proj = self.patch_embed.proj.weight
        flat = initializer(XavierUniform(), (proj.shape[0], int(np.prod(proj.shape[1:]))), ms.float32).init_data()
        proj.set_data(flat.reshape(proj.shape))

    def random_masking(self, x):
        """Keep `num_keep` patches per sample at random: (kept tokens, mask 1 = removed, ids_restore)."""
        batch, length, _ = x.shape
        noise = self.noise((batch, length))
        ids_shuffle = ops.argsort(noise, axis=1)
        ids_restore = ops.argsort(ids_shuffle, axis=1)
        kept = self.gather_rows(x, ids_shuffle[:, :self.num_keep])
        mask = ops.zeros((batch, length), x.dtype)
        if self.num_keep < length:
            mask = ops.concat((mask[:, :self.num_keep], ops.ones((batch, length - self.num_keep), x.dtype)), axis=1)
        return kept, ops.gather_elements(mask, 1, ids_restore), ids_restore

    def forward_encoder(self, images):
        x = self.patch_embed(images) + self.pos_embed[:, 1:].astype(images.dtype)
        x, mask, ids_restore = self.random_masking(x)
        cls = (self.cls_token + self.pos_embed[:, :1]).astype(x.dtype)
        x = ops.concat((ops.broadcast_to(cls, (x.shape[0], 1, x.shape[2])), x), axis=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        batch, tokens, dim = x.shape
        length = ids_restore.shape[1]
        if tokens - 1 < length:  # mask_ratio 0 (for comparisons) leaves no place for mask tokens
            mask_tokens = ops.broadcast_to(self.mask_token.astype(x.dtype), (batch, length + 1 - tokens, dim))
            x = ops.concat((x, mask_tokens), axis=1)
        # cls first, then the encoded patches and mask tokens back in their places
        order = ops.concat((ops.zeros((batch, 1), ids_restore.dtype), ids_restore + 1), axis=1)
        x = self.gather_rows(x, order) + self.decoder_pos_embed.astype(x.dtype)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x[:, 1:]))  # per token: cls dropped first

    def forward_loss(self, images, pred, mask):
        target = self.patchify(images)
        if self.norm_pix_loss:
            target = self.standardize(target)
        loss = self.squared_error(pred.astype(ms.float32), target)
        return (loss * mask).sum() / ops.maximum(mask.sum(), 1.0)  # 0, not NaN, when nothing is masked

    def construct(self, images):
        latent, mask, ids_restore = self.forward_encoder(images)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(images, pred, mask), pred, mask


class MaePretrainLoss(nn.Cell):
    """(images, labels) -> loss, so pretraining runs through the same train step and data as fine-tuning."""

    def __init__(self, mae):
        super().__init__(auto_prefix=False)  # keep the model's parameter names in checkpoints
        self.mae = mae

    def construct(self, images, labels):
        return self.mae(images)[0]


# no head; MAE pretrains without stochastic depth
MAE = model_family("mae", {key: key for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
                                                "mask_ratio", "norm_pix_loss", "decoder_embed_dim", "decoder_depth",
                                                "decoder_num_heads")} | {"image_size": "img_size"},
                   MaskedAutoencoderViT)


def _mae(defaults, **kwargs):
    return MaskedAutoencoderViT(**dict(defaults, **kwargs))


DECODER = dict(decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16, mlp_ratio=4.0)


@register_model(MAE)
def mae_vit_base_patch16(**kwargs):
    return _mae(dict(DECODER, patch_size=16, embed_dim=768, depth=12, num_heads=12), **kwargs)


@register_model(MAE)
def mae_vit_large_patch16(**kwargs):
    return _mae(dict(DECODER, patch_size=16, embed_dim=1024, depth=24, num_heads=16), **kwargs)


@register_model(MAE)
def mae_vit_huge_patch14(**kwargs):
    return _mae(dict(DECODER, patch_size=14, embed_dim=1280, depth=32, num_heads=16), **kwargs)
