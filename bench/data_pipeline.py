"""Training-pipeline throughput: this repository's ImageNet pipeline vs timm + a PyTorch DataLoader.

Both decode the same JPEGs and apply RandomResizedCrop 224 (bicubic), flip, RandAugment
`rand-m9-mstd0.5-inc1`, normalisation and random erasing (0.25; --re_mode pixel, per-pixel noise, is this
repository's default and timm's train.py's, const is timm's create_transform's), with the same worker count.

    python bench/data_pipeline.py [--images 800] [--workers 2] [--batch 32] [--epochs 5] [--re_mode pixel|const]
                                  [--data DIR]

Without --data it writes ~500x375 JPEGs made from the photos bundled in scikit-learn / scikit-image.
The two take turns epoch by epoch, so that a noisy machine slows them alike; prints the median images/s of
each and their ratio.
"""
import argparse
import os
import sys
import tempfile

from in_turns import median_milliseconds_in_turns
from machine import describe_machine

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

POLICY = "rand-m9-mstd0.5-inc1"


def epoch(batches):
    """One pass over `batches()`; returns the number of images."""
    return sum(len(labels) for _, labels in batches())


def ours(data, workers, batch, re_mode):
    from src.args import parse_args
    from src.data import create_dataset

    args = parse_args(["--set", "ImageNet", "--data_url", data, "--num_classes", str(len(os.listdir(
        os.path.join(data, "train")))), "--image_size", "224", "--interpolation", "bicubic", "--batch_size",
        str(batch), "--num_parallel_workers", str(workers), "--auto_augment", POLICY, "--re_prob", "0.25",
        "--re_mode", re_mode])
    dataset = create_dataset(args, training=True)
    return lambda: dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)


def _posterize_zero_bits_as_black():
    """timm's PosterizeIncreasing asks for 0 bits at magnitude 10, which Pillow >= 10 refuses; older Pillow
    (and MindSpore's Posterize) return a black image then. Give timm that behaviour so it can run."""
    from PIL import Image
    from timm.data import auto_augment

    original = auto_augment.NAME_TO_OP["PosterizeIncreasing"]

    def posterize(img, bits_to_keep, **kwargs):
        return Image.new(img.mode, img.size) if bits_to_keep <= 0 else original(img, bits_to_keep, **kwargs)

    auto_augment.NAME_TO_OP["PosterizeIncreasing"] = posterize


def timm_loader(data, workers, batch, re_mode):
    import torch
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    torch.set_num_threads(1)
    _posterize_zero_bits_as_black()
    transform = create_transform(224, is_training=True, auto_augment=POLICY, re_prob=0.25, re_mode=re_mode,
                                 interpolation="bicubic")
    loader = torch.utils.data.DataLoader(ImageFolder(os.path.join(data, "train"), transform), batch_size=batch,
                                         shuffle=True, drop_last=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    return lambda: iter(loader)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=800, help="images to generate (without --data)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs of each, after one warm-up epoch")
    parser.add_argument("--re_mode", default="pixel", choices=["pixel", "const"], help="random erasing fill")
    parser.add_argument("--data", default=None, help="an ImageNet-layout folder (with train/)")
    args = parser.parse_args()

    data = args.data
    if data is None:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        from sample_photos import write_photo_imagenet

        data = tempfile.mkdtemp(prefix="bench_imagenet_")
        write_photo_imagenet(data, num_classes=8, train_per_class=args.images // 8, val_per_class=0)
    sides = [make(data, args.workers, args.batch, args.re_mode) for make in (timm_loader, ours)]
    images = [set(), set()]  # the images per epoch each side yields
    reference_ms, ours_ms = median_milliseconds_in_turns(
        [lambda batches=batches, seen=seen: seen.add(epoch(batches)) for batches, seen in zip(sides, images)],
        args.epochs)
    assert len(images[0]) == 1 and images[0] == images[1], f"the two pipelines yield different epochs: {images}"
    count = images[0].pop()
    reference, mindspore_rate = count * 1000 / reference_ms, count * 1000 / ours_ms
    print(describe_machine())
    print(f"timm + DataLoader ({args.workers} workers): {reference:8.1f} images/s")
    print(f"this repository   ({args.workers} workers): {mindspore_rate:8.1f} images/s")
    print(f"ratio (ours / timm): {mindspore_rate / reference:.2f}x (median of {args.epochs} epochs each, in turns; "
          f"erasing {args.re_mode})")


if __name__ == "__main__":
    main()
