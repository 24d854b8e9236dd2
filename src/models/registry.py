"""Model registry: variants are small factory functions registered by name, each with its family's
configuration (ModelFamily): which config keys it reads and which constructor arguments it takes."""
import dataclasses
import difflib
import inspect

from mindspore import nn

from src.errors import UserInputError
from src.models.layers import seed_noise

_MODELS = {}


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """`config_keys` maps the config keys a family reads to constructor arguments; `arguments` are every keyword
    argument its variants take (the config's and those callers pass directly, e.g. a tokenizer's as_tokenizer)."""
    name: str
    config_keys: dict
    arguments: frozenset


def model_family(name, config_keys, *classes, exclude=(), extra=()):
    """A family whose variants take the keyword arguments of `classes`' constructors (less `exclude`, plus
    `extra`)."""
    arguments = {parameter.name for cls in classes for parameter in inspect.signature(cls.__init__).parameters.values()
                 if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)}
    arguments = (arguments - {"self", *exclude}) | set(extra)
    unknown = set(config_keys.values()) - arguments
    assert not unknown, f"{name}: config keys map to arguments it does not take: {unknown}"
    return ModelFamily(name, dict(config_keys), frozenset(arguments))


def register_model(family):
    """Decorator factory: `@register_model(FAMILY)` makes a factory available to `create_model` under its
    function name."""
    def register(factory):
        _MODELS[factory.__name__] = (factory, family)
        return factory

    return register


def list_models():
    return sorted(_MODELS)


def all_config_keys():
    """The config keys some registered model reads."""
    return {key for _, family in _MODELS.values() for key in family.config_keys}


def family_of(name):
    """The ModelFamily of the registered model `name`."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserInputError(f"unknown model '{name}'{hint}")
    return _MODELS[name][1]


def create_model(name, **kwargs):
    """Build the registered model `name`; keyword arguments override the variant's defaults.

    Arguments given as None are left to the variant, so config keys that are unset pass through. Noise
    streams are seeded with 0 (see seed_noise).
    """
    family = family_of(name)
    overrides = {key: value for key, value in kwargs.items() if value is not None}
    unknown = sorted(set(overrides) - family.arguments)
    if unknown:
        raise UserInputError(f"model '{name}' does not take {', '.join(repr(key) for key in unknown)}")
    model = _MODELS[name][0](**overrides)
    return seed_noise(model, seed=0) if isinstance(model, nn.Cell) else model
