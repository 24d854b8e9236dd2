"""Datasets: `create_dataset(args, training)` builds the pipeline the config names."""
import mindspore.dataset as ds

from src.data.augment.mixup import Mixup
from src.data.cifar10 import load_cifar10
from src.data.transforms import cifar_train_transforms, eval_transforms
from src.errors import UserInputError

DATASETS = ("CIFAR10",)


def uses_mixup(args):
    return args.mix_up > 0 or args.cutmix > 0


def create_dataset(args, training, num_shards=None, shard_id=None):
    """Batched (image, label) dataset; with mixup on, training labels are soft targets."""
    if args.set != "CIFAR10":
        raise UserInputError(f"unknown dataset set '{args.set}', expected one of {list(DATASETS)}")
    images, labels = load_cifar10(args.data_url, training)
    if labels.max() >= args.num_classes:
        raise UserInputError(f"{args.data_url} has labels up to {labels.max()} but num_classes is {args.num_classes}")
    if num_shards and len(images) < num_shards:
        raise UserInputError(f"{len(images)} images cannot be split over {num_shards} devices")
    dataset = ds.NumpySlicesDataset({"image": images, "label": labels}, shuffle=training,
                                    num_shards=num_shards, shard_id=shard_id)
    transforms = cifar_train_transforms(args) if training else eval_transforms(args)
    workers = max(1, args.num_parallel_workers)
    dataset = dataset.map(transforms, input_columns="image", num_parallel_workers=workers)
    dataset = dataset.map(lambda label: label.astype("int32"), input_columns="label")
    batch_size = args.batch_size
    if training and len(images) // (num_shards or 1) < batch_size:
        raise UserInputError(f"batch_size {batch_size} is larger than the {len(images) // (num_shards or 1)} "
                             "training images of this device")
    dataset = dataset.batch(batch_size, drop_remainder=training, num_parallel_workers=workers)
    if training and uses_mixup(args):
        mixup = Mixup(args.num_classes, mixup_alpha=args.mix_up, cutmix_alpha=args.cutmix, prob=args.mixup_prob,
                      switch_prob=args.switch_prob, label_smoothing=args.label_smoothing,
                      seed=args.seed + (shard_id or 0))
        dataset = dataset.map(mixup, input_columns=["image", "label"], num_parallel_workers=1)
    return dataset


__all__ = ["create_dataset", "uses_mixup"]
