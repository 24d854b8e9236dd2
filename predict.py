"""Classify images: python predict.py --config C --pretrained CKPT IMAGE_OR_FOLDER... [--topk 5]
                   python predict.py --pretrained NAME IMAGE_OR_FOLDER...   (a published name, no config needed)

Prints one line per image, its top-k classes with their scores, then, as the last line, the same as JSON.
Class names: ImageNet-1k's for 1000-class models, else the class folders of `data_url/train`, else class
indices. Images get the evaluation preprocessing of the config (of the published weights, for a name).
"""
import argparse
import json
import os
import sys

import mindspore as ms
import numpy as np
from mindspore.dataset import transforms

from src.args import parse_args, split_arguments
from src.data.imagenet import IMAGE_EXTENSIONS, ImageFileSource, class_names
from src.data.transforms import imagenet_eval_transforms
from src.errors import UserInputError, report_user_errors
from src.models import create_model_from_args
from src.runtime.context import init_context
from src.weights.pretrained import load_inference_weights

IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src", "data", "info",
                                "imagenet1k_classes.txt")


def label_names(args):
    if args.num_classes == 1000:
        with open(IMAGENET_CLASSES, encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t")[1] for line in f]
    train = os.path.join(args.data_url, "train")
    if os.path.isdir(train):
        folders = class_names(train)
        if len(folders) == args.num_classes:
            return folders
    return [f"class {index}" for index in range(args.num_classes)]


def image_paths(inputs):
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += sorted(os.path.join(folder, name) for folder, _, names in os.walk(item)
                            for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise UserInputError(f"image or folder not found: {item}")
    if not paths:
        raise UserInputError(f"no images in {', '.join(inputs)}")
    return paths


@report_user_errors
def main(argv=None):
    images, options = split_arguments(sys.argv[1:] if argv is None else argv)
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--topk", type=int, default=5)
    own_args, rest = own.parse_known_args(options)
    args = parse_args(rest, published_settings=True)
    if not args.pretrained:
        raise UserInputError("predict.py needs --pretrained CKPT (or a published name, see --list_pretrained)")
    if not images:
        raise UserInputError("predict.py needs at least one IMAGE_OR_FOLDER")
    init_context(args)
    network = create_model_from_args(args)
    load_inference_weights(network, args.pretrained, args.eval_use_ema)
    network.set_train(False)

    names = label_names(args)
    preprocess = transforms.Compose(imagenet_eval_transforms(args))
    reader = ImageFileSource([(path, 0) for path in image_paths(images)], substitute=False)
    topk = max(1, min(own_args.topk, args.num_classes))
    results = []
    for path, _ in reader.samples:
        data = reader.read(path)
        if data is None:  # unreadable: the reader has said so
            continue
        logits = network(ms.Tensor(preprocess(data)[None])).asnumpy()[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        best = np.argsort(-probs)[:topk]
        predictions = [{"label": int(i), "name": names[i], "score": float(probs[i])} for i in best]
        results.append({"image": path, "predictions": predictions})
        print(f"{path}: " + " | ".join(f"{p['name']} ({p['label']}) {p['score']:.4f}" for p in predictions))
    if not results:
        raise UserInputError(f"none of the {len(reader.samples)} image(s) can be read")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
