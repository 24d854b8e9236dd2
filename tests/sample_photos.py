"""Real photographs shipped inside scikit-learn and scikit-image, as an ImageNet-layout folder.

For tests, demos and benchmarks on a machine that cannot download data.
"""
import os

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def bundled_photos():
    """RGB uint8 photos: scikit-learn's two, plus scikit-image's when it is installed."""
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    try:
        from skimage import data
    except ImportError:
        return photos
    return photos + [np.asarray(getattr(data, name)())[..., :3] for name in SKIMAGE_PHOTOS]


def write_photo_imagenet(root, num_classes=3, train_per_class=6, val_per_class=2, size=(500, 375), seed=0):
    """`root/train/<class>/*.JPEG` and `root/val/<class>/*.JPEG`: random crops of the bundled photos,
    resized to about `size` (ImageNet's typical 500x375), a photo per class where there are enough."""
    rng = np.random.default_rng(seed)
    photos = bundled_photos()
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label in range(num_classes):
            folder = os.path.join(root, split, f"n{label:08d}")
            os.makedirs(folder, exist_ok=True)
            photo = photos[label % len(photos)]
            for index in range(count):
                height, width = photo.shape[:2]
                crop_h, crop_w = int(height * rng.uniform(0.7, 1.0)), int(width * rng.uniform(0.7, 1.0))
                top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
                crop = Image.fromarray(photo[top:top + crop_h, left:left + crop_w])
                crop.resize(size, Image.BICUBIC).save(os.path.join(folder, f"{split}_{label}_{index}.JPEG"),
                                                      quality=90)
    return root
