"""What each training task builds around the model: initial weights, frozen helper networks
(a tokenizer, a teacher), and the cell that computes the loss from a dataset row.

    classification   (image, label)                             -> criterion(model(image), label)
    mae_pretrain     (image, label)                             -> the MAE's own loss
    beit_pretrain    (image, tokenizer_image, bool_masked_pos)  -> masked token cross-entropy
    vqkd_train       (image, label)                             -> VQ-KD distillation loss
"""
from mindspore import nn

from src.data import uses_mixup
from src.errors import UserInputError
from src.models import create_model, create_model_from_args
from src.models.beit.beit_pretrain import MaskedImageModelingLoss
from src.models.beit.vqkd import VqkdDistillLoss, init_codebook_with_kmeans
from src.models.mae.mae import MaePretrainLoss
from src.tools.checkpoint import load_weights
from src.tools.criterion import create_criterion
from src.weights.pretrained import pretrained_weights

TASKS = ("classification", "mae_pretrain", "beit_pretrain", "vqkd_train")
# helper networks are rebuilt from their own files: checkpoints and resumes leave them out
FROZEN_PREFIXES = ("tokenizer.", "teacher_model.")


def check_task(args):
    if args.task not in TASKS:
        raise UserInputError(f"unknown task '{args.task}', expected one of {list(TASKS)}")
    if args.task == "beit_pretrain" and not args.tokenizer:
        raise UserInputError("task beit_pretrain needs a tokenizer (dall_e_encoder or a vqkd_* model)")
    if args.task == "vqkd_train" and not args.teacher:
        raise UserInputError("task vqkd_train needs a teacher model (e.g. beit_base_patch16_224)")


def build_networks(args, log=print):
    """(the model to train, its frozen helper: the tokenizer or teacher, or None).

    The model is initialised from `pretrained`: a classifier head of another class count, or one missing
    from a pretraining checkpoint (with the fc_norm of mean pooling), starts anew. The VQ-KD decoder
    regresses features as wide as its teacher's.
    """
    helper = None
    if args.task == "beit_pretrain":
        helper = build_tokenizer(args, log)
    elif args.task == "vqkd_train":
        helper = build_teacher(args, log)
    network = create_model_from_args(args, **({"decoder_out_dim": helper.embed_dim}
                                              if args.task == "vqkd_train" else {}))
    if args.pretrained:
        head = getattr(network, "classifier_name", "head") + "."
        load_weights(network, pretrained_weights(network, args.pretrained), args.pretrained,
                     head_prefixes=(head,), missing_ok=(head, "fc_norm."), log=log)
    if args.linear_probe or args.freeze_blocks:
        freeze(network, args)
    return network, helper


def freeze(network, args):
    """Linear probing trains the head only; `freeze_blocks` N also freezes the embeddings and blocks 0..N-1."""
    if not hasattr(network, "blocks"):
        raise UserInputError(f"linear_probe / freeze_blocks are for ViTs; {args.arch} has no transformer blocks")
    frozen_blocks = tuple(f"blocks.{index}." for index in range(args.freeze_blocks))
    for param in network.get_parameters():
        if args.linear_probe:
            param.requires_grad = param.name.startswith("head.")
        elif param.name.startswith(("patch_embed.", "cls_token", "pos_embed") + frozen_blocks):
            param.requires_grad = False


def frozen_helper(name, pretrained, overrides, what, log):
    """A tokenizer or teacher: built by name, loaded from its checkpoint (random weights only for smoke runs)."""
    network = create_model(name, **overrides)
    if pretrained:
        load_weights(network, pretrained_weights(network, pretrained), pretrained, log=log)
    else:
        log(f"warning: the {what} {name} has random weights (no checkpoint given): for smoke tests only")
    network.set_train(False)
    return network


def build_teacher(args, log=print):
    return frozen_helper(args.teacher, args.teacher_pretrained,
                         {"num_classes": 0, "img_size": args.image_size, **(args.teacher_args or {})}, "teacher", log)


def build_tokenizer(args, log=print):
    return frozen_helper(args.tokenizer, args.tokenizer_pretrained,
                         {"img_size": args.second_input_size, "as_tokenizer": True, **(args.tokenizer_args or {})},
                         "tokenizer", log)


def network_with_loss(args, network, helper=None):
    if args.task == "mae_pretrain":
        return MaePretrainLoss(network)  # the model computes its own loss
    if args.task == "beit_pretrain":
        return MaskedImageModelingLoss(network, helper)
    if args.task == "vqkd_train":
        return VqkdDistillLoss(network, helper, args.teacher_mean, args.teacher_std)
    return nn.WithLossCell(network, create_criterion(args, soft_targets=uses_mixup(args)))


def prepare_training(args, network, train_data, log=print):
    """One-off initialisation from data before a fresh (not resumed) run: VQ-KD's k-means codebook."""
    if args.task == "vqkd_train" and args.quantize_kmeans_init and not (args.resume or args.pretrained):
        images = next(train_data.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]
        init_codebook_with_kmeans(network, images)
        log(f"codebook initialised by k-means on {images.shape[0]} images")


def frozen_param(name):
    return name.startswith(FROZEN_PREFIXES)

