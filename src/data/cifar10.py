"""CIFAR-10 in its binary layout (`cifar-10-batches-bin`).

Each record is 1 label byte followed by 3072 bytes: the 32x32 R, G and B planes. Files are
read with NumPy rather than `Cifar10Dataset`, which insists on exactly 10000 records per file,
so subsets and any number of `data_batch_*.bin` files work.
"""
import glob
import os

import numpy as np

from src.errors import UserInputError

IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + int(np.prod(IMAGE_SHAPE))
FOLDER_NAME = "cifar-10-batches-bin"


def find_cifar10_folder(data_url):
    """`data_url` itself or its `cifar-10-batches-bin` child, whichever holds the .bin files."""
    for folder in (data_url, os.path.join(data_url, FOLDER_NAME)):
        if glob.glob(os.path.join(folder, "*_batch*.bin")):
            return folder
    raise UserInputError(f"no CIFAR-10 binaries (data_batch_*.bin, test_batch.bin) in {data_url} "
                         f"or {os.path.join(data_url, FOLDER_NAME)}")


def split_files(folder, training):
    pattern = "data_batch_*.bin" if training else "test_batch.bin"
    files = sorted(glob.glob(os.path.join(folder, pattern)))
    if not files:
        raise UserInputError(f"no {pattern} in {folder}")
    return files


def read_cifar10_bin(files):
    """Images as (N, 32, 32, 3) uint8 HWC and labels as (N,) int32, from the given .bin files."""
    images, labels = [], []
    for path in files:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD_BYTES:
            raise UserInputError(f"{path} has {raw.size} bytes, not a whole number of {RECORD_BYTES}-byte "
                                 "CIFAR-10 records (truncated or not a CIFAR-10 binary)")
        records = raw.reshape(-1, RECORD_BYTES)
        labels.append(records[:, 0].astype(np.int32))
        images.append(records[:, 1:].reshape(-1, *IMAGE_SHAPE).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def load_cifar10(data_url, training):
    return read_cifar10_bin(split_files(find_cifar10_folder(data_url), training))
