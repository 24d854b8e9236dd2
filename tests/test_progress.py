"""Progress reporting: a redrawn bar with an ETA on a terminal, a plain line per tenth in a log."""
import io

from src.runtime.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_one_line_is_redrawn_with_counts_and_eta():
    stream = Terminal()
    assert list(progress(range(7), 7, "converting", stream=stream)) == list(range(7))
    text = stream.getvalue()
    assert text.startswith("\rconverting [") and text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert last == "converting [" + "#" * 30 + "] 7/7 00:00<00:00"


def test_in_a_log_it_writes_one_plain_line_per_tenth():
    stream = io.StringIO()
    assert sum(progress(iter(range(25)), 25, "evaluating", stream=stream)) == sum(range(25))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    counts = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert counts == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]  # the first step past each tenth
    assert lines[-1] == "evaluating: 25/25 (100%), elapsed 00:00, ETA 00:00"
    short = io.StringIO()
    list(progress(range(3), 3, "x", stream=short))
    assert len(short.getvalue().splitlines()) == 3  # fewer steps than tenths: one line each
