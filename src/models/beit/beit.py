"""BEiT and BEiT v2 classifiers: the shared VisionTransformer with BEiT's options (relative position
bias, q/v biases, layer scale, mean pooling), registered under unilm's / timm's names."""
from src.models.registry import model_family, register_model
from src.models.vit import BEIT_CONFIG_KEYS, VIT_CONFIG_KEYS, VisionTransformer

BEIT = model_family("beit", {**VIT_CONFIG_KEYS, **BEIT_CONFIG_KEYS}, VisionTransformer)


def _beit(defaults, **kwargs):
    return VisionTransformer(**dict(defaults, **kwargs))


BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, use_abs_pos_emb=False,
            use_rel_pos_bias=True)
LARGE = dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, use_abs_pos_emb=False,
             use_rel_pos_bias=True)


@register_model(BEIT)
def beit_base_patch16_224(**kwargs):
    return _beit(dict(BASE, img_size=224, init_values=0.1), **kwargs)


@register_model(BEIT)
def beit_base_patch16_224_pt22k_ft22k(**kwargs):
    """The BEiT seed's checkpoint: pretrained and fine-tuned on ImageNet-22k, 85.2% on ImageNet-1k."""
    return _beit(dict(BASE, img_size=224, init_values=0.1), **kwargs)


@register_model(BEIT)
def beit_base_patch16_384(**kwargs):
    return _beit(dict(BASE, img_size=384, init_values=0.1), **kwargs)


@register_model(BEIT)
def beit_large_patch16_224(**kwargs):
    return _beit(dict(LARGE, img_size=224, init_values=1e-5), **kwargs)


@register_model(BEIT)
def beit_large_patch16_384(**kwargs):
    return _beit(dict(LARGE, img_size=384, init_values=1e-5), **kwargs)


@register_model(BEIT)
def beit_large_patch16_512(**kwargs):
    return _beit(dict(LARGE, img_size=512, init_values=1e-5), **kwargs)


@register_model(BEIT)
def beitv2_base_patch16_224(**kwargs):
    return _beit(dict(BASE, img_size=224, init_values=1e-5), **kwargs)


@register_model(BEIT)
def beitv2_large_patch16_224(**kwargs):
    return _beit(dict(LARGE, img_size=224, init_values=1e-5), **kwargs)
