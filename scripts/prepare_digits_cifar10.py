"""Write scikit-learn's bundled digits (1797 real 8x8 scans) in the CIFAR-10 binary layout.

    python scripts/prepare_digits_cifar10.py OUT_DIR

Images are upscaled to 32x32 RGB; 80% go to data_batch_*.bin, 20% to test_batch.bin. No download.
The tests write their CIFAR-10 folders with the writers here too.
"""
import os
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10_bin(path, images, labels):
    """Write (N, 32, 32, 3) uint8 images and their labels as one CIFAR-10 .bin file."""
    images = np.asarray(images, dtype=np.uint8)
    if images.shape[1:] != (32, 32, 3):
        raise ValueError(f"CIFAR-10 images are 32x32x3, got {images.shape[1:]}")
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None],
                              images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)
    records.tofile(path)


def write_cifar10_folder(folder, train, test, class_names=CIFAR10_CLASS_NAMES, train_files=5):
    """A complete `cifar-10-batches-bin` folder from (images, labels) pairs for train and test."""
    os.makedirs(folder, exist_ok=True)
    train_images, train_labels = train
    for index, chunk in enumerate(np.array_split(np.arange(len(train_images)), train_files), start=1):
        write_cifar10_bin(os.path.join(folder, f"data_batch_{index}.bin"), train_images[chunk], train_labels[chunk])
    write_cifar10_bin(os.path.join(folder, "test_batch.bin"), *test)
    with open(os.path.join(folder, "batches.meta.txt"), "w", encoding="utf-8") as meta:
        meta.write("\n".join(class_names) + "\n")


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
