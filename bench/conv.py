"""A convolution's forward and backward on BiT-R50's shapes: the fused CPU kernels (src/ops/conv.py,
src/ops/csrc/cpu_conv_kernels.cc) against PyTorch's, in one run, the two taking turns step by step so that a
noisy machine slows them alike.

    python bench/conv.py [--batch 8] [--image_size 224] [--steps 10]

Prints, for each distinct convolution of resnetv2_50x1 (kernel, stride, channels, input size) and how often the
network has it, the median time of forward + backward (input and weight gradients; the root's weight gradient
only) of each side, their ratio, and the sums over the network.
"""
import argparse
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from in_turns import ForwardBackward, median_milliseconds_in_turns  # noqa: E402
from machine import describe_machine  # noqa: E402

from src.ops.conv import Conv2d  # noqa: E402


def resnetv2_50_convolutions(image_size, width=64, depths=(3, 4, 6, 3)):
    """Counter of (kernel, stride, in_channels, out_channels, input size) over resnetv2_50x1's convolutions."""
    found = Counter({(7, 2, 3, width, image_size): 1})
    size, channels = image_size // 4, width
    for stage, depth in enumerate(depths):
        mid = width * 2 ** stage
        out = mid * 4
        for unit in range(depth):
            stride = 2 if stage > 0 and unit == 0 else 1
            if unit == 0:
                found[(1, stride, channels, out, size)] += 1
            found[(1, 1, channels, mid, size)] += 1
            found[(3, stride, mid, mid, size)] += 1
            size //= stride
            found[(1, 1, mid, out, size)] += 1
            channels = out
    return found


def mindspore_step(kernel, stride, channels, out_channels, x, dy, input_grad):
    conv = Conv2d(channels, out_channels, kernel, stride=stride, pad_mode="pad" if kernel > 1 else "valid",
                  padding=kernel // 2, has_bias=False, input_grad=input_grad)
    step = ForwardBackward(conv, input_grad)
    inputs, output_grad = ms.Tensor(x), ms.Tensor(dy)
    return lambda: step(inputs, output_grad)[0].asnumpy()


def torch_step(kernel, stride, channels, out_channels, x, dy, input_grad):
    conv = torch.nn.Conv2d(channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
    inputs, output_grad = torch.from_numpy(x).requires_grad_(input_grad), torch.from_numpy(dy)

    def step():
        conv(inputs).backward(output_grad)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    print(f"convolution forward + backward, batch {args.batch}, resnetv2_50x1 at {args.image_size}px; "
          f"{describe_machine()}")
    print(f"{'k':>2} {'s':>2} {'in':>5} {'out':>5} {'size':>4} {'count':>5}  {'fused':>9}  {'PyTorch':>9}  ratio")
    totals = np.zeros(2)
    for (kernel, stride, channels, out_channels, size), count in sorted(resnetv2_50_convolutions(
            args.image_size).items()):
        rng = np.random.default_rng(0)
        out_size = (size + 2 * (kernel // 2) - kernel) // stride + 1
        x = rng.standard_normal((args.batch, channels, size, size), dtype=np.float32)
        dy = rng.standard_normal((args.batch, out_channels, out_size, out_size), dtype=np.float32)
        input_grad = channels != 3  # the root convolution's images need no gradient
        sides = [make(kernel, stride, channels, out_channels, x, dy, input_grad)
                 for make in (mindspore_step, torch_step)]
        medians = np.array(median_milliseconds_in_turns(sides, args.steps))
        totals += medians * count
        print(f"{kernel:2} {stride:2} {channels:5} {out_channels:5} {size:4} {count:5}  {medians[0]:7.2f}ms  "
              f"{medians[1]:7.2f}ms  {medians[1] / medians[0]:.2f}x")
    print(f"network (times x counts): fused {totals[0]:.0f} ms, PyTorch {totals[1]:.0f} ms, "
          f"ratio {totals[1] / totals[0]:.2f}x")


if __name__ == "__main__":
    main()
