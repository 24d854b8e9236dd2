"""Datasets: `create_dataset(args, training, view)` builds the pipeline the config names."""
import os

import mindspore.dataset as ds

from src.data.augment.mixup import Mixup
from src.data.cifar10 import load_cifar10
from src.data.imagenet import ImageFileSource, class_names, scan_class_folders, scan_unlabeled, select_listed
from src.data.mim_views import MaskedImageModelingViews
from src.data.transforms import (
    cifar_train_transforms,
    eval_transforms,
    imagenet_eval_transforms,
    imagenet_train_transforms,
)
from src.errors import UserInputError

MIM_COLUMNS = ["image", "tokenizer_image", "bool_masked_pos"]
VIEWS = ("labeled", "masked_image_modeling")


def uses_mixup(args):
    return args.mix_up > 0 or args.cutmix > 0


def evaluation_share(rows, num_shards, shard_id):
    """The rows one rank evaluates: r, r + n, r + 2n, ... Every row is evaluated exactly once over the ranks
    (MindSpore's own sharding evens the shards out by repeating rows)."""
    return rows if not num_shards else rows[shard_id::num_shards]


def _cifar10(args, training, num_shards, shard_id):
    images, labels = load_cifar10(args.data_url, training)
    if labels.max() >= args.num_classes:
        raise UserInputError(f"{args.data_url} has labels up to {labels.max()} but num_classes is {args.num_classes}")
    if not training:
        images, labels = (evaluation_share(rows, num_shards, shard_id) for rows in (images, labels))
        num_shards = shard_id = None
    dataset = ds.NumpySlicesDataset({"image": images, "label": labels}, shuffle=training,
                                    num_shards=num_shards, shard_id=shard_id)
    return dataset, len(images), cifar_train_transforms(args) if training else eval_transforms(args), set()


def _image_files(samples, training, num_shards, shard_id):
    """(encoded image, label) rows from [(path, label)]; one reader thread: more contend for the GIL and
    read several times slower. The dataset's `unreadable_images` is the set of files skipped so far."""
    source = ImageFileSource(samples, substitute=training)
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"], shuffle=training,
                                  num_shards=num_shards, shard_id=shard_id, num_parallel_workers=1,
                                  python_multiprocessing=False)
    return dataset, source.skipped


def _imagenet(args, training, num_shards, shard_id):
    folder = os.path.join(args.data_url, "train" if training else "val")
    classes, samples = scan_class_folders(folder)
    if len(classes) != args.num_classes:
        raise UserInputError(f"{folder} has {len(classes)} class folders but num_classes is {args.num_classes}")
    other_split = os.path.join(args.data_url, "val" if training else "train")
    other_classes = class_names(other_split) if os.path.isdir(other_split) else classes
    if other_classes != classes:
        differing = sorted(set(classes) ^ set(other_classes))
        raise UserInputError(f"train/ and val/ of {args.data_url} hold different class folders (a label would name "
                             f"one class in training and another in evaluation): {', '.join(differing[:3])}"
                             + (f" and {len(differing) - 3} more" if len(differing) > 3 else ""))
    if training and args.file_list:  # a labeled subset, e.g. a few images per class
        samples = select_listed(samples, args.data_url, args.file_list)
    if not training:
        samples = evaluation_share(samples, num_shards, shard_id)
        num_shards = shard_id = None
    dataset, unreadable = _image_files(samples, training, num_shards, shard_id)
    seed = args.seed + (shard_id or 0)
    transforms = imagenet_train_transforms(args, seed) if training else imagenet_eval_transforms(args)
    return dataset, len(samples), transforms, unreadable


def _image_folder(args, training, num_shards, shard_id):
    """Unlabeled images (all under data_url, or those of file_list) for self-supervised pretraining."""
    if not training:
        raise UserInputError("set ImageFolder holds unlabeled images: there is nothing to evaluate")
    samples = scan_unlabeled(args.data_url, args.file_list)
    dataset, unreadable = _image_files(samples, True, num_shards, shard_id)
    return dataset, len(samples), imagenet_train_transforms(args, args.seed + (shard_id or 0)), unreadable


DATASETS = {"CIFAR10": _cifar10, "ImageNet": _imagenet, "ImageFolder": _image_folder}


def create_dataset(args, training, view="labeled", num_shards=None, shard_id=None):
    """Batched rows of a view: "labeled", (image, label), with soft-target labels when mixup is on in training;
    "masked_image_modeling" (BEiT pretraining), (image, tokenizer_image, bool_masked_pos). The dataset's
    `unreadable_images` holds the image files found unreadable so far (substituted in training, left out with
    the label LEFT_OUT in evaluation)."""
    if args.set not in DATASETS:
        raise UserInputError(f"unknown dataset set '{args.set}', expected one of {list(DATASETS)}")
    assert view in VIEWS, view
    masked_image_modeling = view == "masked_image_modeling"
    dataset, num_samples, transforms, unreadable = DATASETS[args.set](args, training, num_shards, shard_id)
    if training and num_shards and num_samples < num_shards:
        raise UserInputError(f"{num_samples} images cannot be split over {num_shards} devices")
    # Python augmentations draw from one generator: with several workers the draw order varies between runs.
    # MindSpore refuses more workers than CPUs; the published configs ask for 16.
    workers = 1 if args.deterministic else min(args.num_parallel_workers, os.cpu_count() or 1)
    if masked_image_modeling:
        views = MaskedImageModelingViews(args, seed=args.seed + (shard_id or 0))
        dataset = dataset.map(views, input_columns="image", output_columns=MIM_COLUMNS,
                              num_parallel_workers=workers).project(MIM_COLUMNS)
    else:
        dataset = dataset.map(transforms, input_columns="image", num_parallel_workers=workers)
        dataset = dataset.map(lambda label: label.astype("int32"), input_columns="label")
    # a training batch holds the accum_steps micro-batches of one optimizer step
    batch_size = args.batch_size * args.accum_steps if training else args.batch_size
    per_device = num_samples // (num_shards or 1)
    if training and per_device < batch_size:
        raise UserInputError(f"batch_size {args.batch_size} x accum_steps {args.accum_steps} is larger than the "
                             f"{per_device} training images of this device" if args.accum_steps > 1 else
                             f"batch_size {args.batch_size} is larger than the {per_device} training images "
                             "of this device")
    dataset = dataset.batch(batch_size, drop_remainder=training, num_parallel_workers=workers)
    if training and uses_mixup(args):
        mixup = Mixup(args.num_classes, mixup_alpha=args.mix_up, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                      switch_prob=args.switch_prob, label_smoothing=args.label_smoothing,
                      seed=args.seed + (shard_id or 0))
        dataset = dataset.map(mixup, input_columns=["image", "label"], num_parallel_workers=1)
    dataset.unreadable_images = unreadable
    return dataset


__all__ = ["create_dataset", "uses_mixup"]
