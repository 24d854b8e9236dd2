"""Models: `create_model(name, **kwargs)` builds any registered variant."""
import src.models.beit.beit  # noqa: F401  (importing a family's module registers its variants)
import src.models.beit.beit_pretrain  # noqa: F401
import src.models.beit.dall_e  # noqa: F401
import src.models.beit.vqkd  # noqa: F401
import src.models.bit.resnetv2  # noqa: F401
import src.models.mae.mae  # noqa: F401
import src.models.mae.models_vit  # noqa: F401
from src.models.registry import create_model, list_models, register_model

# config key -> constructor argument, for the keys a config may set on a model
MODEL_ARGS = {"num_classes": "num_classes", "layers": "layers", "width_factor": "width_factor",
              "drop_path_rate": "drop_path_rate", "image_size": "img_size", "patch_size": "patch_size",
              "embed_dim": "embed_dim", "depth": "depth", "num_heads": "num_heads", "mlp_ratio": "mlp_ratio",
              "init_values": "init_values", "rel_pos_bias": "use_rel_pos_bias",
              "shared_rel_pos_bias": "use_shared_rel_pos_bias", "abs_pos_emb": "use_abs_pos_emb",
              "use_mean_pooling": "use_mean_pooling", "mask_ratio": "mask_ratio", "norm_pix_loss": "norm_pix_loss",
              "global_pool": "global_pool", "decoder_embed_dim": "decoder_embed_dim", "decoder_depth": "decoder_depth",
              "decoder_num_heads": "decoder_num_heads", "linear_probe": "head_bn", "vocab_size": "vocab_size",
              "early_layers": "early_layers", "head_layers": "head_layers", "shared_lm_head": "shared_lm_head",
              "codebook_size": "codebook_size", "codebook_dim": "codebook_dim", "codebook_decay": "codebook_decay"}


def create_model_from_args(args, **extra):
    """The model a config describes; keys left unset (None) keep the variant's defaults."""
    return create_model(args.arch, **{argument: getattr(args, key) for key, argument in MODEL_ARGS.items()}, **extra)


__all__ = ["create_model", "create_model_from_args", "list_models", "register_model"]
