"""Model registry: variants are small factory functions registered by name."""
import difflib

from src.errors import UserInputError

_MODEL_FACTORIES = {}


def register_model(factory):
    """Decorator: make `factory` available to `create_model` under its function name."""
    _MODEL_FACTORIES[factory.__name__] = factory
    return factory


def list_models():
    return sorted(_MODEL_FACTORIES)


def create_model(name, **kwargs):
    """Build the registered model `name`; keyword arguments override the variant's defaults.

    Arguments given as None are left to the variant, so config keys that are unset pass through.
    """
    if name not in _MODEL_FACTORIES:
        close = difflib.get_close_matches(name, list(_MODEL_FACTORIES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserInputError(f"unknown model '{name}'{hint}")
    overrides = {key: value for key, value in kwargs.items() if value is not None}
    try:
        return _MODEL_FACTORIES[name](**overrides)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise UserInputError(f"model '{name}' does not take {str(err).split('argument ')[-1]}") from None
