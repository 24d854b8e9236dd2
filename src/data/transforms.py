"""Image transforms built from the config: MindSpore's C++ vision ops on HWC uint8 images."""
import mindspore.dataset.vision as vision
import numpy as np
from mindspore.dataset.vision import Inter
from PIL import Image

from src.data.augment.auto_augment import GeometryStyle, augmentation_from_string
from src.data.augment.random_erasing import RandomErasing
from src.errors import UserInputError
from src.ops import image_kernels

# name -> (MindSpore's resize mode, PIL's filter); lanczos only where PIL resizes (BEiT pretraining views)
INTERPOLATIONS = {"nearest": (Inter.NEAREST, Image.NEAREST), "bilinear": (Inter.BILINEAR, Image.BILINEAR),
                  "bicubic": (Inter.BICUBIC, Image.BICUBIC), "lanczos": (None, Image.LANCZOS)}


def _interpolation(name, library):
    known = sorted(key for key, modes in INTERPOLATIONS.items() if modes[library] is not None)
    if name not in known:
        raise UserInputError(f"unknown interpolation '{name}', expected one of {known}")
    return INTERPOLATIONS[name][library]


def interpolation_mode(name):
    """MindSpore's resize mode of an interpolation name."""
    return _interpolation(name, 0)


def pil_interpolation(name):
    """PIL's resampling filter of an interpolation name."""
    return _interpolation(name, 1)


def resize_size(args):
    """Images are resized to image_size / crop_ratio, then cropped to image_size."""
    return int(round(args.image_size / args.crop_ratio))


def pixel_mean_std(args):
    """The configured mean and std on the 0-255 scale of uint8 pixels."""
    return [255 * m for m in args.mean], [255 * s for s in args.std]


def normalize_ops(args):
    mean, std = pixel_mean_std(args)
    return [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]


class PythonStage:
    """Python ops applied in turn as one map operation: given several, MindSpore wraps them in its Compose, whose
    argument check (inspect.signature) runs for every image."""

    def __init__(self, ops):
        self.ops = ops

    def __call__(self, image):
        for op in self.ops:
            image = op(image)
        return image


class NormalizeToChw:
    """Normalize + HWC2CHW as one Python op (a compiled kernel): among Python augmentations it joins their stage,
    where MindSpore's ops would split it in two and convert the image between them."""

    def __init__(self, args):
        self.mean, self.std = (np.float32(values) for values in pixel_mean_std(args))
        image_kernels.kernels()  # compiled here, before the pipeline's threads call them

    def __call__(self, image):
        return image_kernels.normalize_to_chw(image, self.mean, self.std)


def horizontal_flip(args):
    return vision.RandomHorizontalFlip(args.hflip)


def cifar_train_transforms(args):
    """Resize, random crop, flip and RandAugment (BiT's CIFAR recipe), then normalise."""
    size = resize_size(args)
    ops = [vision.Resize((size, size), interpolation_mode(args.interpolation)),
           vision.RandomCrop(args.image_size),
           horizontal_flip(args)]
    if args.rand_augment_num_layers > 0:
        ops.append(vision.RandAugment(num_ops=args.rand_augment_num_layers, magnitude=args.rand_augment_magnitude,
                                      num_magnitude_bins=31))
    return ops + normalize_ops(args)


def eval_transforms(args):
    """Resize to image_size / crop_ratio and take the centre crop (CIFAR: arrays, square already)."""
    size = resize_size(args)
    return [vision.Resize((size, size), interpolation_mode(args.interpolation)),
            vision.CenterCrop(args.image_size)] + normalize_ops(args)


def imagenet_train_transforms(args, seed=None):
    """Encoded bytes -> C++ RandomResizedCrop (decoding only the crop), flip, timm's `auto_augment` policy,
    normalisation, random erasing.

    One map runs them all in threads: the C++ ops, the compiled kernels and PIL release the GIL in their heavy
    parts, and worker processes or more stages measured slower (bench/data_pipeline.py). With augmentations in
    Python, normalisation joins them in one Python stage.
    """
    ops = [vision.RandomCropDecodeResize(args.image_size, scale=(args.crop_min_scale, 1.0), ratio=(3 / 4, 4 / 3),
                                         interpolation=interpolation_mode(args.interpolation)),
           horizontal_flip(args)]
    augmentation, erasing = [], []
    if args.auto_augment:
        # as timm's create_transform: geometric ops fill with the mean colour and use the configured
        # interpolation
        style = GeometryStyle(fill=[min(255, round(255 * m)) for m in args.mean],
                              resample=pil_interpolation(args.interpolation))
        augmentation.append(augmentation_from_string(args.auto_augment, style=style, seed=seed))
    if args.re_prob > 0:
        erasing.append(RandomErasing(args.re_prob, mode=args.re_mode, max_count=args.re_count, seed=seed))
    if not augmentation and not erasing:
        return ops + normalize_ops(args)
    return ops + [PythonStage(augmentation + [NormalizeToChw(args)] + erasing)]


def imagenet_eval_transforms(args):
    """Encoded bytes -> short side resized to image_size / crop_ratio, centre crop, normalise."""
    return [vision.Decode(), vision.Resize(resize_size(args), interpolation_mode(args.interpolation)),
            vision.CenterCrop(args.image_size)] + normalize_ops(args)
