"""Write scikit-learn's bundled digits (1797 real 8x8 scans) in the CIFAR-10 binary layout.

    python scripts/prepare_digits_cifar10.py OUT_DIR

Images are upscaled to 32x32 RGB; 80% go to data_batch_*.bin, 20% to test_batch.bin. No download.
"""
import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from src.data.cifar10 import write_cifar10_folder  # noqa: E402


def digits_as_cifar(seed=0):
    digits = load_digits()
    gray = (digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR).convert("RGB"))
                       for img in gray])
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(0.8 * len(images))
    return (images[order[:split]], digits.target[order[:split]]), (images[order[split:]], digits.target[order[split:]])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/prepare_digits_cifar10.py OUT_DIR")
    train, test = digits_as_cifar()
    write_cifar10_folder(sys.argv[1], train, test, class_names=[str(d) for d in range(10)])
    print(f"wrote {len(train[0])} train and {len(test[0])} test digits to {sys.argv[1]}")
