"""Batch and image augmentations with timm's semantics."""
import os

import numpy as np


class ProcessLocalRandom:
    """A NumPy generator that is re-seeded in each process the object is copied into.

    MindSpore's Python workers get copies of the transform: without this they would all draw the
    same random numbers.
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._pid = None
        self._rng = None

    @property
    def rng(self):
        if self._pid != os.getpid():
            self._pid = os.getpid()
            entropy = None if self.seed is None else [self.seed, self._pid]
            self._rng = np.random.default_rng(entropy)
        return self._rng
