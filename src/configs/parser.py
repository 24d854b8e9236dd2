"""YAML config files: loading and key checking."""
import difflib
import os

import yaml

from src.errors import UserInputError, first_line


def closest_key(key, valid_keys):
    """The valid key spelled most like `key`, or None."""
    matches = difflib.get_close_matches(key, list(valid_keys), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key, valid_keys, where):
    hint = closest_key(key, valid_keys)
    suggestion = f"; did you mean '{hint}'?" if hint else ""
    return f"unknown config key '{key}' in {where}{suggestion}"


def load_yaml_config(path):
    """Read a YAML mapping from `path`, with a clear error for a missing or malformed file."""
    if not os.path.isfile(path):
        raise UserInputError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise UserInputError(f"config file {path} is not valid YAML: {first_line(err)}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserInputError(f"config file {path} must hold a mapping of key: value, got {type(content).__name__}")
    return content
