"""SIGTERM / SIGINT during training: the first asks for a graceful stop, a second exits at once."""
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While active, remembers the first SIGTERM or SIGINT (`received`: its number) instead of dying, so the
    loop can finish the step in flight and save; a second signal ends the process at once with 128 + its
    number, as a shell reports a process killed by it."""

    def __init__(self, log=print):
        self.received = None
        self.log = log
        self._previous = {}

    @property
    def name(self):
        return signal.Signals(self.received).name if self.received else None

    def _handle(self, signum, frame):
        if self.received is None:
            self.received = signum
            self.log(f"{signal.Signals(signum).name} received: stopping after the step in flight "
                     "(send it again to exit at once)")
            return
        sys.stderr.flush()
        os._exit(128 + signum)

    def __enter__(self):
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False
