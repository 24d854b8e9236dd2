"""Progress of long loops (evaluation, checkpoint conversion): a bar with an ETA when attached to a
terminal, otherwise one plain line per tenth of the work, which reads well in a log file."""
import sys
import time


def _clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def progress(iterable, total, description, stream=None, width=30, show=True):
    """Yield the items of `iterable` (`total` of them) while reporting progress on `stream` (stderr);
    with `show` false, just the items."""
    if not show:
        yield from iterable
        return
    stream = stream or sys.stderr
    on_terminal = stream.isatty()
    start = last_draw = time.monotonic()
    next_tenth = 1
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        elapsed = now - start
        eta = _clock(elapsed / done * (total - done)) if total else "?"
        if on_terminal:
            if now - last_draw >= 0.1 or done >= total:
                filled = int(width * done / total) if total else 0
                stream.write(f"\r{description} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                             f"{_clock(elapsed)}<{eta}")
                stream.flush()
                last_draw = now
        elif total and done * 10 >= next_tenth * total:
            next_tenth = done * 10 // total + 1
            stream.write(f"{description}: {done}/{total} ({100 * done // total}%), elapsed {_clock(elapsed)}, "
                         f"ETA {eta}\n")
            stream.flush()
    if on_terminal and done:
        stream.write("\n")
        stream.flush()
