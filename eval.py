"""Evaluate a checkpoint: python eval.py --config C --data_url D --pretrained CKPT

Shows progress on stderr (a bar on a terminal, plain lines in a log); prints top-1 / top-5 and, as the
last line, one JSON object with top1, top5, loss, num_samples (the images evaluated) and left_out (unreadable
images, named in warnings and not counted).
"""
import json

from src.args import parse_args
from src.data import create_dataset
from src.engine.evaluation import evaluate
from src.errors import UserInputError, report_user_errors
from src.models import create_model_from_args
from src.runtime.context import init_context
from src.weights.pretrained import load_inference_weights


@report_user_errors
def main(argv=None):
    args = parse_args(argv, published_settings=True)
    if not args.pretrained:
        raise UserInputError("eval.py needs --pretrained CKPT")
    init_context(args)
    network = create_model_from_args(args)
    use_ema = load_inference_weights(network, args.pretrained, args.eval_use_ema)
    metrics = evaluate(network, create_dataset(args, training=False), show_progress=True)
    weights = "EMA weights" if use_ema else "weights"
    print(f"{args.arch} ({weights} of {args.pretrained}) on {args.set}: top-1 {metrics['top1']:.4f}, "
          f"top-5 {metrics['top5']:.4f}, loss {metrics['loss']:.4f}, {metrics['num_samples']} images"
          + (f" ({metrics['left_out']} unreadable left out)" if metrics["left_out"] else ""))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
