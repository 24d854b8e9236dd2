"""One error type for bad user input, reported by the entry scripts as a single line."""
import functools
import sys


class UserInputError(Exception):
    """A problem with what the user gave us (config, paths, data, checkpoints)."""


def first_line(err):
    """The first line of an exception's message (library errors often run to pages), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def report_user_errors(main):
    """Run `main`; a UserInputError becomes one line on stderr and exit status 2, no traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
