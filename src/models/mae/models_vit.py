"""MAE's fine-tuning / linear-probing ViTs, as facebookresearch/mae `models_vit.py`: the shared
VisionTransformer with a plain qkv bias, learned absolute position embedding, no relative position
bias or layer scale; `global_pool=True` pools the patch tokens into `fc_norm`, else cls token + `norm`."""
from src.models.registry import model_family, register_model
from src.models.vit import VIT_CONFIG_KEYS, VisionTransformer

MAE_VIT = dict(qkv_bias=True, use_abs_pos_emb=True, use_rel_pos_bias=False, init_values=None)
MAE_VIT_FAMILY = model_family("mae_vit", {**VIT_CONFIG_KEYS, "global_pool": "global_pool"}, VisionTransformer,
                              extra=("global_pool",))


def _vit(defaults, global_pool=True, **kwargs):
    kwargs.setdefault("use_mean_pooling", global_pool)
    return VisionTransformer(**{**MAE_VIT, **defaults, **kwargs})


@register_model(MAE_VIT_FAMILY)
def vit_base_patch16(**kwargs):
    return _vit(dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0), **kwargs)


@register_model(MAE_VIT_FAMILY)
def vit_large_patch16(**kwargs):
    return _vit(dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0), **kwargs)


@register_model(MAE_VIT_FAMILY)
def vit_huge_patch14(**kwargs):
    return _vit(dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0), **kwargs)
