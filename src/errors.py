"""One error type for bad user input, reported by the entry scripts as a single line."""
import functools
import os
import sys


class UserInputError(Exception):
    """A problem with what the user gave us (config, paths, data, checkpoints)."""


def make_folder(path, purpose):
    """Create the folder `path` and its parents; where the system refuses (a file in the way, a permission, a full
    disk), one error line that names the folder and `purpose` (e.g. "for the checkpoints")."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create the folder {path} {purpose}: {err.strerror}") from None


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
