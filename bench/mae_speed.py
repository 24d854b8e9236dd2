"""MAE's asymmetric design: one pretraining step with mask_ratio 0.75 vs the same model with mask 0
(the encoder on all patches), same batch, in one run, the two taking turns step by step.

    python bench/mae_speed.py [--arch mae_vit_base_patch16] [--batch 8] [--image_size 224] [--steps 5]

Prints the median step time of each, the CPU time the host took from this virtual machine during its steps,
and the speed-up (the paper reports >= 3x for ViT-L on TPUs), beside the ratio of the two models' multiply-adds
in matrix products: what the speed-up would be if nothing else cost time (mae_vit_base_patch16: 2.35x; its
8-block decoder runs on every patch either way).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from machine import describe_machine, stolen_cpu_seconds  # noqa: E402

from src.engine.train_one_step import TrainOneStepCell  # noqa: E402
from src.models import create_model  # noqa: E402
from src.models.mae.mae import MaePretrainLoss  # noqa: E402
from src.optim.optimizer import AdamW  # noqa: E402

MASK_RATIOS = (0.75, 0.0)  # MAE's mask, and the encoder on every patch


def block_multiply_adds(blocks, tokens):
    """Multiply-adds of transformer blocks' linear layers and attention products over `tokens` tokens."""
    total = 0
    for block in blocks:
        layers = (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)
        total += tokens * sum(layer.weight.size for layer in layers) + 2 * tokens * tokens * block.norm1.gamma.size
    return total


def multiply_adds(mae):
    """One image's forward multiply-adds in matrix products (patch embedding, linear layers, attention): the
    arithmetic the mask saves, and so the bound of the speed-up where the rest costs nothing."""
    patches = mae.patch_embed.num_patches
    visible = mae.num_keep + 1  # and the class token
    return (patches * mae.patch_embed.proj.weight.size + block_multiply_adds(mae.blocks, visible)
            + visible * mae.decoder_embed.weight.size + block_multiply_adds(mae.decoder_blocks, patches + 1)
            + patches * mae.decoder_pred.weight.size)


def train_step(arch, mask_ratio, image_size):
    """(AdamW train step of `arch` at `mask_ratio`, its forward multiply-adds per image)."""
    mae = create_model(arch, img_size=image_size, mask_ratio=mask_ratio, norm_pix_loss=True)
    optimizer = AdamW(mae.trainable_params(), learning_rate=1e-4, beta2=0.95)
    return TrainOneStepCell(MaePretrainLoss(mae), optimizer, ms.Tensor(1.0, ms.float32)), multiply_adds(mae)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="mae_vit_base_patch16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    images = ms.Tensor(np.random.default_rng(0).standard_normal(
        (args.batch, 3, args.image_size, args.image_size)).astype(np.float32))
    labels = ms.Tensor(np.zeros(args.batch, np.int32))
    runs = {ratio: train_step(args.arch, ratio, args.image_size) for ratio in MASK_RATIOS}
    for step, _ in runs.values():
        step(images, labels)  # compile
    # the two models take turns step by step, so that a host whose speed drifts slows them alike
    seconds, stolen = {ratio: [] for ratio in runs}, dict.fromkeys(runs, 0.0)
    for _ in range(args.steps):
        for ratio, (step, _) in runs.items():
            stolen_before, start = stolen_cpu_seconds(), time.perf_counter()
            step(images, labels)[0].asnumpy()
            seconds[ratio].append(time.perf_counter() - start)
            stolen[ratio] += stolen_cpu_seconds() - stolen_before
    print(f"{args.arch}, batch {args.batch}, {args.image_size}px, {ms.get_context('device_target')}; "
          f"{describe_machine()}")
    median = {ratio: float(np.median(times)) for ratio, times in seconds.items()}
    for ratio in runs:
        print(f"mask {ratio:<4g}: {median[ratio] * 1000:9.1f} ms/step  {args.batch / median[ratio]:7.2f} images/s  "
              f"CPU time stolen by the host: {stolen[ratio]:.1f} s")
    masked, full = MASK_RATIOS
    print(f"speed-up of the asymmetric design: {median[full] / median[masked]:.2f}x (matrix products' multiply-adds: "
          f"{runs[masked][1] / 1e9:.2f} G vs {runs[full][1] / 1e9:.2f} G per image, a bound of "
          f"{runs[full][1] / runs[masked][1]:.2f}x)")


if __name__ == "__main__":
    main()
