"""A linear layer's forward and backward on a ViT's shapes: MindSpore's MatMul, the fused CPU kernel
(src/ops/csrc/cpu_linear_kernels.cc) and PyTorch's nn.Linear, in one run, the three taking turns step by step
so that a noisy machine slows them alike.

    python bench/matmul.py [--rows 6304] [--steps 15]

--rows is batch x tokens (6304: a batch of 32 at 224px, 197 tokens; 1576: a batch of 8). Prints the median
time of forward + backward for each shape and the ratio to PyTorch of each MindSpore side.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from in_turns import ForwardBackward, median_milliseconds_in_turns  # noqa: E402
from machine import describe_machine  # noqa: E402

from src.ops.cpu_kernels import Dense, use_fused_cpu_kernels  # noqa: E402

# (in, out) of a ViT block's qkv, proj, fc1 and fc2: tiny (192 wide) and base (768 wide)
SHAPES = [(192, 576), (192, 192), (192, 768), (768, 192), (768, 2304), (768, 768), (768, 3072), (3072, 768)]


def mindspore_step(fused, in_features, out_features, x, dy):
    previous = use_fused_cpu_kernels(fused)
    step = ForwardBackward(Dense(in_features, out_features))
    use_fused_cpu_kernels(previous)
    inputs, output_grad = ms.Tensor(x), ms.Tensor(dy)
    return lambda: step(inputs, output_grad)[1][0][0].asnumpy()


def torch_step(in_features, out_features, x, dy):
    layer = torch.nn.Linear(in_features, out_features)
    inputs, output_grad = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)

    def step():
        layer(inputs).backward(output_grad)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6304)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    print(f"linear layer forward + backward, {args.rows} rows; {describe_machine()}")
    print(f"{'in x out':>11}  {'MindSpore':>9}  {'fused':>9}  {'PyTorch':>9}  ratio MindSpore / fused")
    for in_features, out_features in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((args.rows, in_features), dtype=np.float32)
        dy = rng.standard_normal((args.rows, out_features), dtype=np.float32)
        sides = [mindspore_step(fused, in_features, out_features, x, dy) for fused in (False, True)]
        sides.append(torch_step(in_features, out_features, x, dy))
        native, fused, reference = median_milliseconds_in_turns(sides, args.steps)
        print(f"{in_features:5} x {out_features:4}  {native:7.2f}ms  {fused:7.2f}ms  {reference:7.2f}ms  "
              f"{reference / native:.2f}x / {reference / fused:.2f}x")


if __name__ == "__main__":
    main()
