"""YAML config files: loading and key checking."""
import argparse
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


# values a config may hold, each use of a YAML anchor counted again: refuses a "billion laughs" file, whose few
# lines of anchors within anchors expand to more values than memory holds once anything walks or prints them
MAX_CONFIG_VALUES = 100_000


def yaml_value(text):
    """A command-line value written in YAML ("[1, 1, 1, 1]", "{num_heads: 2}", "null"), for argparse's type=."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"not valid YAML: {yaml_problem(err)}") from None


def yaml_problem(err):
    """What a YAML parser found wrong and where ("expected ',' or ']', but got '<stream end>' at line 3, column
    5"): its message's first line is often only the construct it was in ("while parsing a flow node")."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or first_line(err)}{where}"


def load_yaml_config(path):
    """Read a YAML mapping from `path`, with a clear error for a missing, malformed or hostile file."""
    if not os.path.isfile(path):
        raise UserInputError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
        size = expanded_size(content, {}) if isinstance(content, dict) else 0
    except yaml.YAMLError as err:
        raise UserInputError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from None
    except RecursionError:  # in the parser, or in expanded_size
        raise UserInputError(f"config file {path} nests its values too deeply") from None
    except ContainsItself:
        raise UserInputError(f"config file {path} holds a value that contains itself (a YAML anchor used inside "
                             "its own value)") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserInputError(f"config file {path} must hold a mapping of key: value, got {type(content).__name__}")
    if size > MAX_CONFIG_VALUES:
        raise UserInputError(f"config file {path} expands to {size} values, more than {MAX_CONFIG_VALUES} (YAML "
                             "anchors used within anchors)")
    return content


class ContainsItself(Exception):
    """A YAML value that holds itself: an anchor used inside its own value."""


def expanded_size(value, sizes):
    """How many values `value` holds with each use of a shared (anchored) part counted, each part walked once;
    `sizes` memoises parts by id. ContainsItself where a part contains itself."""
    if not isinstance(value, (list, dict)):
        return 1
    if id(value) in sizes:
        if sizes[id(value)] is None:
            raise ContainsItself()
        return sizes[id(value)]
    sizes[id(value)] = None  # being walked
    parts = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
    sizes[id(value)] = 1 + sum(expanded_size(part, sizes) for part in parts)
    return sizes[id(value)]
