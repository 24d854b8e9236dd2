"""Shared by the per-layer benches (matmul.py, conv.py): a layer's forward and backward as one MindSpore cell, and
the sides of a comparison timed taking turns step by step, so that a noisy machine slows them alike."""
import time

import numpy as np
from mindspore import nn, ops


class ForwardBackward(nn.Cell):
    """The layer's output and its gradients (the input's unless `input_grad` is False, the weights') for a given
    output gradient."""

    def __init__(self, layer, input_grad=True):
        super().__init__()
        self.layer = layer
        self.grad = ops.GradOperation(get_all=input_grad, get_by_list=True, sens_param=True)
        self.weights = layer.trainable_params()

    def construct(self, x, dy):
        return self.layer(x), self.grad(self.layer, self.weights)(x, dy)


def median_milliseconds_in_turns(sides, steps):
    """[median ms of each of the callables `sides`] over `steps` rounds, each round calling every side once, after
    one warm-up (compile) call each."""
    for step in sides:
        step()
    times = [[] for _ in sides]
    for _ in range(steps):
        for step, measured in zip(sides, times):
            start = time.perf_counter()
            step()
            measured.append(time.perf_counter() - start)
    return [float(np.median(measured)) * 1000 for measured in times]
