"""The ViT image classifier shared by BEiT / BEiT v2 (microsoft/unilm `beit/modeling_finetune.py`) and
MAE fine-tuning (facebookresearch/mae `models_vit.py`).

A cls token, optional absolute position embedding, relative position bias per block or shared by
all blocks, BEiT's q/v biases or a plain qkv bias, layer scale, drop path, and either mean pooling
+ fc_norm or the final norm + cls token in front of the head.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from src.models.layers import (
    Block,
    PatchEmbed,
    RelativePositionBias,
    dense,
    drop_path_rates,
    layer_norm,
    rescale_residual_projections,
)
from src.ops.cpu_kernels import PatchTokenMean

# config key -> VisionTransformer argument, for the ViT classifier families (BEiT, MAE's fine-tuning ViTs)
VIT_CONFIG_KEYS = {"num_classes": "num_classes", "drop_path_rate": "drop_path_rate", "image_size": "img_size",
                   "patch_size": "patch_size", "embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads",
                   "mlp_ratio": "mlp_ratio", "linear_probe": "head_bn"}
# BEiT's own options
BEIT_CONFIG_KEYS = {"init_values": "init_values", "rel_pos_bias": "use_rel_pos_bias",
                    "shared_rel_pos_bias": "use_shared_rel_pos_bias", "abs_pos_emb": "use_abs_pos_emb",
                    "use_mean_pooling": "use_mean_pooling"}

class VisionTransformer(nn.Cell):
    """Constructor arguments carry unilm's names; `qkv_bias`: "qv" (BEiT), True (a plain bias) or False;
    `num_classes` 0: no head (a backbone: tokenizer encoders, distillation teachers)."""

    classifier_name = "head"  # dropped when a checkpoint's class count differs

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias="qv", drop_path_rate=0.0, init_values=None,
                 use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False,
                 use_mean_pooling=True, init_scale=0.001, head_bn=False):
        super().__init__()
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = self.patch_embed.grid_size
        self.cls_token = ms.Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim), ms.float32),
                                      name="cls_token")
        self.use_abs_pos_emb = use_abs_pos_emb
        if use_abs_pos_emb:
            self.pos_embed = ms.Parameter(initializer(TruncatedNormal(0.02), (1, self.patch_embed.num_patches + 1,
                                                                               embed_dim), ms.float32),
                                          name="pos_embed")
        self.use_shared_rel_pos_bias = use_shared_rel_pos_bias
        if use_shared_rel_pos_bias:
            self.rel_pos_bias = RelativePositionBias(grid, num_heads)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.CellList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, rates[i], init_values,
                  window_size=grid if use_rel_pos_bias else None)
            for i in range(depth)])
        self.use_mean_pooling = use_mean_pooling
        if use_mean_pooling:
            self.patch_token_mean = PatchTokenMean()
            self.fc_norm = layer_norm(embed_dim)
        else:
            self.norm = layer_norm(embed_dim)
        self.head_bn = head_bn
        if head_bn:  # MAE's linear probe: BatchNorm without affine parameters in front of the classifier
            self.head_norm = nn.BatchNorm1d(embed_dim, affine=False, eps=1e-6)
        if num_classes > 0:
            self.head = dense(embed_dim, num_classes)
            # MAE's linear probe starts the head at std 0.01: LARS moves a weight in proportion to its norm
            scale = 0.5 if head_bn else init_scale
            self.head.weight.set_data(self.head.weight * scale)
        rescale_residual_projections(self.blocks)

    def with_cls_token(self, patches):
        """(B, N, D) patch embeddings -> (B, 1 + N, D) with the cls token and the absolute position embedding."""
        cls = ops.broadcast_to(self.cls_token.astype(patches.dtype), (patches.shape[0], 1, patches.shape[2]))
        x = ops.concat((cls, patches), axis=1)
        if self.use_abs_pos_emb:
            x = x + self.pos_embed.astype(x.dtype)
        return x

    def shared_bias(self):
        return self.rel_pos_bias() if self.use_shared_rel_pos_bias else None

    def forward_tokens(self, x):
        """All tokens after the last block, not normalised."""
        x = self.with_cls_token(self.patch_embed(x))
        shared_bias = self.shared_bias()
        for block in self.blocks:
            x = block(x, shared_bias)
        return x

    def forward_features(self, x):
        x = self.forward_tokens(x)
        if self.use_mean_pooling:
            return self.fc_norm(self.patch_token_mean(x))
        return self.norm(x)[:, 0]

    def forward_patch_tokens(self, x):
        """Normalised patch tokens (B, N, D), as unilm's `return_patch_tokens`: what tokenizers quantise
        and distillation teachers provide."""
        x = self.forward_tokens(x)[:, 1:]
        return self.fc_norm(x) if self.use_mean_pooling else self.norm(x)

    def construct(self, x):
        features = self.forward_features(x)
        if self.head_bn:
            features = self.head_norm(features)
        return self.head(features)


