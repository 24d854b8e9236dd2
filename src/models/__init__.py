"""Models: `create_model(name, **kwargs)` builds any registered variant."""
import src.models.beit.beit  # noqa: F401  (importing a family's module registers its variants)
import src.models.beit.beit_pretrain  # noqa: F401
import src.models.beit.dall_e  # noqa: F401
import src.models.beit.vqkd  # noqa: F401
import src.models.bit.resnetv2  # noqa: F401
import src.models.mae.mae  # noqa: F401
import src.models.mae.models_vit  # noqa: F401
from src.models.registry import all_config_keys, create_model, family_of, list_models, register_model


def model_config_keys(arch):
    """The config keys the registered model `arch` reads."""
    return set(family_of(arch).config_keys)


def create_model_from_args(args, **extra):
    """The model a config describes, from the keys its family reads; keys left unset (None) keep the variant's
    defaults."""
    config_keys = family_of(args.arch).config_keys
    return create_model(args.arch, **{argument: getattr(args, key) for key, argument in config_keys.items()}, **extra)


__all__ = ["all_config_keys", "create_model", "create_model_from_args", "list_models", "model_config_keys",
           "register_model"]
