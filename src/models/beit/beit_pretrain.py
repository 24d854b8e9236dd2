"""BEiT / BEiT v2 masked-image-modeling models (unilm `beit/modeling_pretrain.py`,
`beit2/modeling_pretrain.py`) and their loss.

The shared VisionTransformer trunk, headless, with a learned `mask_token` that replaces the
embeddings of masked patches, the final norm on all tokens and `lm_head` over the tokenizer's
vocabulary. BEiT v2's CLS pretraining (`early_layers`, `head_layers`): the [CLS] token after the
last block joins the patch tokens of block `early_layers` in a shallow `cls_pt_layers` head that
predicts the same masked tokens, so the [CLS] token must aggregate the image.
"""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from src.models.layers import Block, dense, drop_path_rates, frozen, layer_norm, rescale_residual_projections
from src.models.registry import model_family, register_model
from src.models.vit import BEIT_CONFIG_KEYS, VIT_CONFIG_KEYS, VisionTransformer


class VisionTransformerForMaskedImageModeling(VisionTransformer):
    """`construct(images, bool_masked_pos)` -> logits over the vocabulary for every patch, (B, N, vocab);
    with `early_layers` set, a tuple (main logits, CLS-pretraining head logits)."""

    def __init__(self, vocab_size=8192, early_layers=None, head_layers=2, shared_lm_head=True,
                 drop_path_rate=0.0, **kwargs):
        super().__init__(num_classes=0, use_mean_pooling=False, drop_path_rate=drop_path_rate, **kwargs)
        embed_dim, depth = self.embed_dim, len(self.blocks)
        self.mask_token = ms.Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim), ms.float32),
                                       name="mask_token")
        self.lm_head = dense(embed_dim, vocab_size)
        self.use_cls_pretraining = bool(early_layers)
        if self.use_cls_pretraining:
            self.early_layers = early_layers
            total = max(depth, early_layers + head_layers)
            rates = drop_path_rates(drop_path_rate, total)
            block0 = self.blocks[0]
            self.cls_pt_layers = nn.CellList([
                Block(embed_dim, block0.attn.num_heads, kwargs.get("mlp_ratio", 4.0), kwargs.get("qkv_bias", "qv"),
                      rates[layer], kwargs.get("init_values"), window_size=None)
                for layer in range(early_layers, early_layers + head_layers)])
            rescale_residual_projections(self.cls_pt_layers, first_layer=early_layers + 1)  # as unilm's init
            self.shared_lm_head = shared_lm_head
            if not shared_lm_head:
                self.cls_pt_norm = layer_norm(embed_dim)
                self.cls_pt_lm_head = dense(embed_dim, vocab_size)

    def construct(self, images, bool_masked_pos):
        x = self.patch_embed(images)
        masked = bool_masked_pos.astype(x.dtype).expand_dims(-1)
        x = x * (1 - masked) + self.mask_token.astype(x.dtype) * masked
        x = self.with_cls_token(x)
        shared_bias = self.shared_bias()
        early_states = x
        for index, block in enumerate(self.blocks):
            x = block(x, shared_bias)
            if self.use_cls_pretraining and index + 1 == self.early_layers:
                early_states = x
        logits = self.lm_head(self.norm(x)[:, 1:])
        if not self.use_cls_pretraining:
            return logits
        cls_pt = ops.concat((x[:, :1], early_states[:, 1:]), axis=1)
        for block in self.cls_pt_layers:
            cls_pt = block(cls_pt, shared_bias)
        if self.shared_lm_head:
            return logits, self.lm_head(self.norm(cls_pt)[:, 1:])
        return logits, self.cls_pt_lm_head(self.cls_pt_norm(cls_pt)[:, 1:])


def masked_cross_entropy(logits, labels, weights):
    """Mean cross-entropy over the masked positions (weights 1) of a (B, N, vocab) batch: the loss of
    unilm's `lm_head(x[bool_masked_pos])` without a data-dependent shape."""
    log_probs = ops.log_softmax(logits.astype(ms.float32), axis=-1)
    picked = ops.gather_elements(log_probs, 2, labels.expand_dims(-1)).squeeze(-1)
    return -(picked * weights).sum() / ops.maximum(weights.sum(), 1.0)


class MaskedImageModelingLoss(nn.Cell):
    """(images, tokenizer_images, bool_masked_pos) -> loss. The frozen tokenizer turns the tokenizer's
    view into the target token ids; the loss is the cross-entropy on masked patches (summed over
    BEiT v2's two heads). Tokenizer parameters are named `tokenizer.*` and are never trained."""

    def __init__(self, model, tokenizer):
        super().__init__(auto_prefix=False)  # keep the model's parameter names in checkpoints
        self.model = model
        self.tokenizer = frozen(tokenizer, "tokenizer.")

    def construct(self, images, tokenizer_images, bool_masked_pos):
        labels = ops.stop_gradient(self.tokenizer(tokenizer_images)).astype(ms.int32)
        weights = bool_masked_pos.astype(ms.float32)
        outputs = self.model(images, bool_masked_pos)
        if self.model.use_cls_pretraining:
            return masked_cross_entropy(outputs[0], labels, weights) + masked_cross_entropy(outputs[1], labels,
                                                                                              weights)
        return masked_cross_entropy(outputs, labels, weights)


BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)
LARGE = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0)
# as run_beit_pretraining.py: one shared relative position bias, no absolute position embedding
PRETRAIN = dict(qkv_bias="qv", use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True)


MIM_CONFIG_KEYS = {**{key: argument for key, argument in {**VIT_CONFIG_KEYS, **BEIT_CONFIG_KEYS}.items()
                      if key not in ("num_classes", "linear_probe", "use_mean_pooling")},
                   "vocab_size": "vocab_size", "early_layers": "early_layers", "head_layers": "head_layers",
                   "shared_lm_head": "shared_lm_head"}
# no classifier: the vocabulary is the output
MIM = model_family("beit_mim", MIM_CONFIG_KEYS, VisionTransformerForMaskedImageModeling, VisionTransformer,
                   exclude=("num_classes", "use_mean_pooling", "head_bn"))


def _mim(defaults, **kwargs):
    return VisionTransformerForMaskedImageModeling(**{**PRETRAIN, **defaults, **kwargs})


@register_model(MIM)
def beit_base_patch16_224_8k_vocab(**kwargs):
    return _mim(dict(BASE, init_values=0.1), **kwargs)


@register_model(MIM)
def beit_large_patch16_224_8k_vocab(**kwargs):
    return _mim(dict(LARGE, init_values=1e-5), **kwargs)


@register_model(MIM)
def beit_base_patch16_224_8k_vocab_cls_pt(**kwargs):
    return _mim(dict(BASE, init_values=0.1, early_layers=9, head_layers=2), **kwargs)


@register_model(MIM)
def beit_large_patch16_224_8k_vocab_cls_pt(**kwargs):
    return _mim(dict(LARGE, init_values=1e-5, early_layers=21, head_layers=2), **kwargs)
