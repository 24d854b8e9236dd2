"""Image folders: ImageNet (`train/<class>/*.JPEG`, `val/<class>/*.JPEG`) and unlabeled images.

Files are listed once and read by a random-access Python source that hands the encoded bytes
to MindSpore's C++ decoders (train: `RandomCropDecodeResize` decodes only what the crop needs).
A file that is not a readable image is skipped with a warning naming it and counted. In training it is
replaced by the next readable one, so a long run does not die on one bad file and batches stay full; in
evaluation it is left out: the row carries a stand-in image and the label LEFT_OUT, which evaluation drops,
so the metrics are those of the readable images, each counted once.
"""
import io
import os
import sys
import threading

import numpy as np
from PIL import Image

from src.errors import UserInputError

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")
JPEG_END = b"\xff\xd9"
JPEG_TAIL = 4096  # the end-of-image marker may be followed by some padding
LEFT_OUT = -1  # the label of an unreadable image in evaluation


def _stand_in_image():
    """A tiny valid PNG that the decoders accept in place of an unreadable file."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    return np.frombuffer(buffer.getvalue(), np.uint8)


def _is_image_file(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def scan_class_folders(root, log=None):
    """(class names in sorted order, [(path, class index)]) of a folder of class folders.

    An empty class folder keeps its index (the class count must still match the model) with a warning.
    """
    if not os.path.isdir(root):
        raise UserInputError(f"image folder not found: {root}")
    classes = class_names(root)
    samples = [(os.path.join(root, name, file_name), index)
               for index, name in enumerate(classes)
               for file_name in sorted(os.listdir(os.path.join(root, name))) if _is_image_file(file_name)]
    if not samples:
        raise UserInputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders of {root}")
    empty = sorted(set(classes) - {classes[label] for _, label in samples})
    if empty:
        (log or _warn)(f"warning: class folders without images in {root}: {', '.join(empty)}")
    return classes, samples


def class_names(root):
    """The class folders' names under `root`, sorted: a class's label is its place in this list."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def _warn(message):
    print(message, file=sys.stderr, flush=True)


def read_file_list(root, file_list):
    """The paths a file list names, one per line, relative to `root`; a path that leads out of `root` (absolute,
    or through ..) is refused."""
    if not os.path.isfile(file_list):
        raise UserInputError(f"file list not found: {file_list}")
    try:  # utf-8-sig: a list saved by Windows Notepad starts with a byte order mark
        with open(file_list, encoding="utf-8-sig") as f:
            names = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise UserInputError(f"file list {file_list} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    root = os.path.abspath(root)
    paths = [os.path.abspath(os.path.join(root, name)) for name in names]
    for name, path in zip(names, paths):
        if os.path.commonpath([root, path]) != root:
            raise UserInputError(f"{file_list} names {name}, outside {root}: paths must be relative to the data folder")
    return paths


def select_listed(samples, root, file_list):
    """The [(path, label)] of `samples` that `file_list` names (paths relative to `root`), in their order."""
    listed = set(read_file_list(root, file_list))
    selected = [(path, label) for path, label in samples if os.path.abspath(path) in listed]
    unknown = listed - {os.path.abspath(path) for path, _ in selected}
    if unknown:
        raise UserInputError(f"{file_list} names {len(unknown)} file(s) that are not images in the class folders "
                             f"of {root}, e.g. {sorted(unknown)[0]}")
    if not selected:
        raise UserInputError(f"{file_list} names no images")
    return selected


def scan_unlabeled(root, file_list=None):
    """[(path, 0)] of every image under `root`, or of the relative paths listed in `file_list`."""
    if not os.path.isdir(root):
        raise UserInputError(f"image folder not found: {root}")
    if file_list:
        paths = read_file_list(root, file_list)
    else:
        paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                       for name in names if _is_image_file(name))
    if not paths:
        raise UserInputError(f"no images in {file_list or root}")
    return [(path, 0) for path in paths]


class ImageFileSource:
    """Random-access (encoded image bytes, label) source for `GeneratorDataset`; `substitute` (training) replaces
    an unreadable file by the next readable one, else it is left out (label LEFT_OUT)."""

    def __init__(self, samples, log=None, substitute=True):
        self.samples = samples
        self.substitute = substitute
        self.skipped = set()
        self._lock = threading.Lock()
        self._log = log or _warn
        self._stand_in = None if substitute else _stand_in_image()

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        if not self.substitute:
            path, label = self.samples[index]
            data = self.read(path)
            return (self._stand_in, np.int32(LEFT_OUT)) if data is None else (data, np.int32(label))
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            data = self.read(path)
            if data is not None:
                return data, np.int32(label)
        raise UserInputError("none of the listed images can be read")

    def read(self, path):
        """The file's bytes, or None (after one warning) when it is not a readable image."""
        if path in self.skipped:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read()
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
                if image.format == "JPEG" and JPEG_END not in data[-JPEG_TAIL:]:
                    # libjpeg in MindSpore's decoder rejects truncated files; PIL's verify() does not see them
                    raise OSError("truncated JPEG (no end-of-image marker)")
        except Exception as err:  # PIL raises many types for bad files
            with self._lock:
                if path not in self.skipped:
                    self.skipped.add(path)
                    what = "substituted" if self.substitute else "left out"
                    self._log(f"warning: unreadable image {path} ({type(err).__name__}: {err}) {what}; "
                              f"{len(self.skipped)} so far")
            return None
        return np.frombuffer(data, np.uint8)
