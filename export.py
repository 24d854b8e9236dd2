"""Export a classifier for inference: python export.py --config C --pretrained CKPT [--file_format MINDIR]

Writes `<file_name>.mindir` (or .air, .onnx) taking (export_batch_size, 3, image_size, image_size) float32
images normalised as the config says, giving logits. The graph holds MindSpore's standard operators only (no
kernels compiled for this machine), with the few that ONNX export lacks (Erf, GroupNorm, adaptive pooling)
written out. AIR needs the Ascend backend.
"""
import os

import mindspore as ms
import numpy as np

from src.args import parse_args
from src.errors import UserInputError, make_folder, report_user_errors
from src.models import create_model_from_args
from src.ops.cpu_kernels import use_portable_operators
from src.runtime.context import init_context
from src.tasks import create_task
from src.tasks.classification import Classification
from src.weights.pretrained import load_inference_weights

FORMATS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}


@report_user_errors
def main(argv=None):
    args = parse_args(argv, published_settings=True)
    file_format = args.file_format.upper()
    if file_format not in FORMATS:
        raise UserInputError(f"unknown file_format '{args.file_format}', expected one of {list(FORMATS)}")
    if file_format == "AIR" and args.device_target != "Ascend":
        raise UserInputError(f"AIR export needs the Ascend backend (device_target is {args.device_target}): "
                             "export MINDIR or ONNX here")
    if not args.pretrained:
        raise UserInputError("export.py needs --pretrained CKPT")
    if not isinstance(create_task(args), Classification):
        raise UserInputError(f"export.py exports classifiers; task {args.task} trains a pretraining model: "
                             "export its fine-tuned classifier")
    init_context(args)
    # the exported graph must run anywhere: MindSpore's standard operators, not this machine's compiled kernels
    use_portable_operators(True)
    network = create_model_from_args(args)
    use_ema = load_inference_weights(network, args.pretrained, args.eval_use_ema)
    network.set_train(False)
    file_name = args.file_name or args.arch
    make_folder(os.path.dirname(os.path.abspath(file_name)), "for the exported file")
    input_shape = (args.export_batch_size, 3, args.image_size, args.image_size)
    ms.export(network, ms.Tensor(np.zeros(input_shape, np.float32)), file_name=file_name, file_format=file_format)
    print(f"exported {args.arch} ({'EMA ' if use_ema else ''}weights of {args.pretrained}) as "
          f"{file_name}{FORMATS[file_format]}: input {input_shape}")


if __name__ == "__main__":
    main()
