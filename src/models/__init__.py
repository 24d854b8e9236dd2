"""Models: `create_model(name, **kwargs)` builds any registered variant."""
from src.models import beit, bit  # noqa: F401  (registers the variants)
from src.models.registry import create_model, list_models, register_model


def create_model_from_args(args):
    """The model a config describes; keys left unset (None) keep the variant's defaults."""
    return create_model(args.arch, num_classes=args.num_classes, layers=args.layers,
                        width_factor=args.width_factor, drop_path_rate=args.drop_path_rate)


__all__ = ["create_model", "create_model_from_args", "list_models", "register_model"]
