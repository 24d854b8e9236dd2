"""MAE reconstructions, as the MAE demo shows them:

    python visualize_mae.py --config C --pretrained CKPT IMAGE... --out DIR [--seed 0]

For each image, DIR/<name>_mae.png holds four panels: original | masked | reconstruction |
reconstruction with the visible patches pasted from the original. Images get the evaluation
preprocessing of the config (short side resize, centre crop, normalisation).
"""
import os
import sys

import mindspore as ms
import numpy as np
from mindspore.dataset import transforms
from PIL import Image

from src.args import parse_args, split_arguments
from src.data.imagenet import ImageFileSource
from src.data.transforms import imagenet_eval_transforms
from src.errors import UserInputError, report_user_errors
from src.models import create_model_from_args
from src.models.mae.mae import unpatchify
from src.runtime.context import init_context
from src.tasks import create_task
from src.tasks.mae_pretrain import MaePretrain
from src.weights.pretrained import load_inference_weights


def reconstruction_panels(mae, image, mean, std):
    """(original, masked, reconstruction, pasted) as HWC uint8 arrays, for one normalised CHW image."""
    loss, pred, mask = mae(ms.Tensor(image[None]))
    pred, mask = pred.asnumpy(), mask.asnumpy()
    target = mae.patchify(ms.Tensor(image[None])).asnumpy()
    if mae.norm_pix_loss:  # predictions are per-patch normalised pixels: undo with the image's own statistics
        mean_p, var_p = target.mean(-1, keepdims=True), target.var(-1, ddof=1, keepdims=True)
        pred = pred * np.sqrt(var_p + 1e-6) + mean_p
    keep = 1 - mask[..., None]  # 1 where the patch was visible
    panels = [target, target * keep, pred, target * keep + pred * (1 - keep)]

    def to_uint8(patches):
        chw = unpatchify(ms.Tensor(patches.astype(np.float32)), mae.patch_size).asnumpy()[0]
        pixels = chw.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)
        return np.clip(np.round(pixels * 255), 0, 255).astype(np.uint8)

    return [to_uint8(p) for p in panels], float(loss.asnumpy())


@report_user_errors
def main(argv=None):
    images, options = split_arguments(sys.argv[1:] if argv is None else argv)
    out = None
    if "--out" in options:
        position = options.index("--out")
        out = options[position + 1] if position + 1 < len(options) else None
        del options[position:position + 2]
    args = parse_args(options, published_settings=True)
    if not isinstance(create_task(args), MaePretrain):
        raise UserInputError("visualize_mae.py needs an MAE pretraining config (task: mae_pretrain)")
    if not args.pretrained or not images or not out:
        raise UserInputError("usage: visualize_mae.py --config C --pretrained CKPT IMAGE... --out DIR")
    init_context(args)
    ms.set_seed(args.seed)
    mae = create_model_from_args(args)
    load_inference_weights(mae, args.pretrained, args.eval_use_ema)
    mae.set_train(False)
    preprocess = transforms.Compose(imagenet_eval_transforms(args))
    reader = ImageFileSource([(path, 0) for path in images])
    os.makedirs(out, exist_ok=True)
    for path in images:
        data = reader.read(path)
        if data is None:
            continue
        panels, loss = reconstruction_panels(mae, preprocess(data), args.mean, args.std)
        target = os.path.join(out, os.path.splitext(os.path.basename(path))[0] + "_mae.png")
        Image.fromarray(np.concatenate(panels, axis=1)).save(target)
        print(f"{target}: masked-patch loss {loss:.4f}")


if __name__ == "__main__":
    main()
