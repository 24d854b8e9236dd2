"""Command-line arguments: YAML config values as defaults, command-line overrides win.

Every key a config may hold is declared in DEFAULTS, so a misspelt key fails loudly
instead of being ignored, and its value is checked against BOUNDS (numbers) or KINDS (the
rest). Spellings used by the seed repositories for the same concept are accepted as ALIASES
and mapped to one canonical key.
"""
import argparse
import math
import os
import reprlib
import sys
from typing import NamedTuple

from src.configs.parser import load_yaml_config, unknown_key_message, yaml_value
from src.errors import UserInputError
from src.weights.zoo import find_published, published_table

# key: (default, help)
DEFAULTS = {
    # ===== Architecture ===== #
    "task": ("classification", "classification, mae_pretrain (masked autoencoder), beit_pretrain (masked image "
                               "modeling of tokenizer codes), vqkd_train (BEiT v2 tokenizer distillation)"),
    "arch": ("bit_m_r50x1", "model name registered in src.models"),
    "num_classes": (1000, "number of classes of the head"),
    "layers": (None, "BiT: units per stage, overrides the variant (e.g. [1, 1, 1, 1])"),
    "width_factor": (None, "BiT: channel width multiplier, overrides the variant"),
    "drop_path_rate": (None, "stochastic depth rate (unset: the model's default)"),
    # ViT family (BEiT, MAE); unset keys keep the variant's values
    "patch_size": (None, "ViT: patch size"),
    "embed_dim": (None, "ViT: embedding width"),
    "depth": (None, "ViT: number of blocks"),
    "num_heads": (None, "ViT: attention heads"),
    "mlp_ratio": (None, "ViT: MLP width / embedding width"),
    "init_values": (None, "BEiT: layer scale initial value (0: no layer scale)"),
    "rel_pos_bias": (None, "BEiT: relative position bias in every block"),
    "shared_rel_pos_bias": (None, "BEiT: one relative position bias shared by all blocks"),
    "abs_pos_emb": (None, "BEiT: absolute position embedding"),
    "use_mean_pooling": (None, "BEiT: mean of patch tokens + fc_norm (else final norm + cls token)"),
    "global_pool": (None, "MAE ViT: mean of patch tokens + fc_norm (else cls token + norm)"),
    "linear_probe": (None, "MAE linear probing: BatchNorm + linear head on a frozen encoder"),
    "freeze_blocks": (0, "partial fine-tuning: freeze the embeddings and the first N blocks"),
    "mask_ratio": (None, "MAE pretraining: fraction of patches removed (0.75)"),
    "norm_pix_loss": (None, "MAE pretraining: per-patch normalised pixel targets"),
    "decoder_embed_dim": (None, "MAE pretraining: decoder width (512)"),
    "decoder_depth": (None, "MAE pretraining: decoder blocks (8)"),
    "decoder_num_heads": (None, "MAE pretraining: decoder attention heads (16)"),
    "vocab_size": (None, "BEiT pretraining: tokenizer vocabulary (8192)"),
    "early_layers": (None, "BEiT v2 CLS pretraining: the block whose patch tokens feed the CLS head"),
    "head_layers": (None, "BEiT v2 CLS pretraining: blocks of the CLS head (2)"),
    "shared_lm_head": (None, "BEiT v2 CLS pretraining: the CLS head shares norm and lm_head"),
    "tokenizer": (None, "BEiT pretraining: tokenizer model (dall_e_encoder, vqkd_encoder_base_decoder_3x768x12_clip)"),
    "tokenizer_pretrained": (None, "BEiT pretraining: tokenizer checkpoint (.ckpt, see conv_pt2ckpt.py)"),
    "tokenizer_args": (None, "BEiT pretraining: tokenizer constructor overrides, e.g. {n_hid: 64}"),
    "second_input_size": (112, "BEiT pretraining: the tokenizer's input size (DALL-E 112, VQ-KD 224)"),
    "second_interpolation": ("lanczos", "BEiT pretraining: the tokenizer view's resize interpolation"),
    "color_jitter": (0.0, "BEiT v2 pretraining: brightness / contrast / saturation jitter (0.4)"),
    "num_mask_patches": (75, "BEiT pretraining: patches masked per image"),
    "min_mask_patches_per_block": (16, "BEiT pretraining: smallest masking block"),
    "max_mask_patches_per_block": (None, "BEiT pretraining: largest masking block (unset: num_mask_patches)"),
    "codebook_size": (None, "VQ-KD: number of codes (8192)"),
    "codebook_dim": (None, "VQ-KD: code dimension (32)"),
    "codebook_decay": (None, "VQ-KD: codebook EMA decay (0.99)"),
    "quantize_kmeans_init": (False, "VQ-KD training: initialise the codebook by k-means on the first batch"),
    "teacher": (None, "VQ-KD training: the teacher model whose patch features are distilled"),
    "teacher_pretrained": (None, "VQ-KD training: teacher checkpoint (.ckpt)"),
    "teacher_args": (None, "VQ-KD training: teacher constructor overrides, e.g. {depth: 2}"),
    "teacher_mean": ([0.485, 0.456, 0.406], "VQ-KD training: the teacher's input normalisation mean"),
    "teacher_std": ([0.229, 0.224, 0.225], "VQ-KD training: the teacher's input normalisation std"),
    "pretrained": (None, "weights that initialise the model: a .ckpt, a published file or a published name "
                        "(--list_pretrained)"),
    "file_format": ("MINDIR", "export.py: MINDIR, AIR (Ascend only) or ONNX"),
    "file_name": ("", "export.py: output path without extension (empty: the arch's name)"),
    "export_batch_size": (1, "export.py: the batch the exported graph takes"),
    "resume": (None, "checkpoint to resume training from (epoch, optimizer, loss scale, EMA)"),
    # ===== Dataset ===== #
    "set": ("CIFAR10", "dataset: CIFAR10, ImageNet, ImageFolder (unlabeled images, for pretraining)"),
    "file_list": (None, "a file of image paths relative to data_url, one per line: ImageFolder reads those; "
                        "ImageNet trains on those of train/ only (a labeled subset; val/ is evaluated whole)"),
    "data_url": ("./data", "dataset folder"),
    "train_url": ("./output", "folder for checkpoints and logs"),
    "image_size": (224, "training / evaluation crop size"),
    "crop_ratio": (0.875, "images are resized to image_size / crop_ratio before cropping"),
    "crop_min_scale": (0.08, "ImageNet training: smallest RandomResizedCrop area (MAE pretraining: 0.2)"),
    "interpolation": ("bilinear", "resize (and auto_augment) interpolation: nearest, bilinear, bicubic "
                                  "(BEiT pretraining also lanczos)"),
    "mean": ([0.485, 0.456, 0.406], "per-channel normalisation mean, on a 0..1 scale"),
    "std": ([0.229, 0.224, 0.225], "per-channel normalisation std, on a 0..1 scale"),
    "batch_size": (64, "batch size per device"),
    "num_parallel_workers": (4, "data pipeline workers (at most the CPUs this machine has)"),
    "hflip": (0.5, "training: horizontal flip probability"),
    "rand_augment_num_layers": (0, "RandAugment operations per image (0: off)"),
    "rand_augment_magnitude": (9, "RandAugment magnitude (0..30)"),
    "auto_augment": (None, "timm policy: rand-m9-mstd0.5-inc1, rand-mN-nK..., original, v0 (ImageNet)"),
    "re_prob": (0.0, "random erasing probability (ImageNet)"),
    "re_mode": ("pixel", "random erasing fill: pixel (per-pixel noise), rand (per channel), const"),
    "re_count": (1, "random erasing: up to this many boxes"),
    "mix_up": (0.0, "mixup alpha (0: off)"),
    "cutmix": (0.0, "cutmix alpha (0: off)"),
    "mixup_prob": (1.0, "probability of applying mixup or cutmix to a batch"),
    "switch_prob": (0.5, "probability of cutmix instead of mixup when both are on"),
    "mixup_mode": ("batch", "mixup mode: batch"),
    "label_smoothing": (0.1, "label smoothing"),
    # ===== Learning rate policy ===== #
    "optimizer": ("momentum", "momentum (SGD), rmsprop, adamw, lars (SGD with LARS trust ratios)"),
    "base_lr": (0.1, "peak learning rate"),
    "blr": (None, "base learning rate per 256 images, as MAE's: when set, base_lr = blr x effective batch / 256 "
                  "(effective batch: batch_size x devices x accum_steps)"),
    "min_lr": (1e-6, "final learning rate of the cosine schedule"),
    "lr_scheduler": ("cosine_lr", "cosine_lr, exp_decay_lr, constant_lr"),
    "warmup_length": (0.0, "warmup epochs (linear from warmup_lr to base_lr)"),
    "warmup_lr": (0.0, "learning rate at the start of warmup"),
    "cool_length": (0.0, "cool-down epochs at cool_lr after the cosine"),
    "cool_lr": (1e-6, "learning rate during cool-down"),
    "lr_decay": (0.98, "exp_decay_lr: multiplicative decay"),
    "lr_num_epochs_per_decay": (2.5, "exp_decay_lr: epochs between decays"),
    # ===== Optimizer ===== #
    "momentum": (0.9, "momentum of SGD and RMSProp"),
    "decay": (0.9, "RMSProp moving-average decay of squared gradients"),
    "beta": ([0.9, 0.999], "AdamW betas"),
    "eps": (1e-8, "epsilon of AdamW and RMSProp"),
    "weight_decay": (1e-4, "weight decay"),
    "filter_bias_and_bn": (True, "no weight decay on biases, norms, position embeddings and tokens"),
    "layer_decay": (1.0, "ViT layer-wise lr decay: block i's lr is scaled by decay^(depth + 1 - (i + 1))"),
    # ===== Training ===== #
    "epochs": (100, "training epochs"),
    "recompute": (False, "activation checkpointing: each transformer block and BiT unit recomputes its "
                         "activations in the backward pass (MindSpore's cell recompute)"),
    "accum_steps": (1, "gradient accumulation: micro-batches of batch_size per optimizer step (an epoch is "
                       "images / (batch_size x devices x accum_steps) optimizer steps)"),
    "amp_level": ("O0", "mixed precision: O0, O1, O2, O3 (O0 on CPU)"),
    "keep_bn_fp32": (True, "keep normalisation layers in float32 under O2/O3"),
    "loss_scale": (1024.0, "(initial) loss scale"),
    "is_dynamic_loss_scale": (False, "adjust the loss scale on overflow"),
    "scale_window": (1000, "dynamic loss scale: double it after this many steps without overflow"),
    "max_overflow_steps": (100, "stop a diverged run: this many consecutive overflowing steps with the dynamic "
                                "loss scale at its minimum (1); with a fixed scale, the first overflow stops it"),
    "use_global_norm": (False, "clip gradients by global norm"),
    "clip_global_norm_value": (1.0, "global norm to clip to"),
    "enable_ema": (False, "keep an exponential moving average of the weights"),
    "ema_decay": (0.9999, "EMA decay per step"),
    "eval_use_ema": (True, "evaluate the EMA weights when the model keeps them"),
    "eval_interval": (1, "evaluate every N epochs (0: never)"),
    "keep_checkpoint_max": (5, "how many latest checkpoints to keep (0: all)"),
    "save_checkpoint_steps": (0, "also save the latest checkpoint every N steps inside an epoch, to resume "
                                 "mid-epoch (0: at epoch ends only)"),
    "log_interval": (100, "print the loss every N steps (and at the end of each epoch)"),
    "seed": (0, "random seed"),
    "deterministic": (False, "deterministic kernels, one data worker, and a resume that replays the random "
                             "augmentations of the skipped steps: a resumed run ends as an uninterrupted one"),
    # ===== Hardware ===== #
    "device_target": ("CPU", "CPU, GPU or Ascend"),
    "device_id": (0, "device index"),
    "device_num": (1, "devices in data-parallel training"),
    "graph_mode": (True, "GRAPH_MODE (True) or PYNATIVE_MODE (False)"),
    "dataset_sink_mode": (None, "data sinking: sink_size steps per call on the device (unset: on for Ascend; "
                                "MindSpore sinks on Ascend and GPU only)"),
    "sink_size": (-1, "steps per data-sink call, dividing an epoch (-1: a whole epoch)"),
    "save_all_ranks": (False, "data parallel: every rank writes its checkpoints (train_url/ckpt_<rank>), "
                              "not only rank 0"),
    "run_modelarts": (False, "ModelArts / OpenI: copy obs:// inputs to cache_dir and outputs back through moxing"),
    "cache_dir": ("/cache", "ModelArts: the node-local folder obs:// inputs and the outputs are copied to"),
    "cache_sync_timeout": (3600, "ModelArts: seconds a process waits for another on its node to copy the inputs"),
}

# Spellings from the seed repositories (BigTransfer) mapped to the canonical key.
ALIASES = {
    "lr_init": "base_lr",
    "num_epochs": "epochs",
    "mixup_alpha": "mix_up",
    "lr_warmup_epochs": "warmup_length",
    "enable_clip_norm": "use_global_norm",
    "gradient_norm": "clip_global_norm_value",
    "update_freq": "accum_steps",  # unilm (BEiT)
    "accum_iter": "accum_steps",  # MAE
}


WHOLE, REAL = "a whole number", "a number"
# The numeric keys: what each must be, as an interval ("[1, inf)": 1 or more); a config's or the command line's
# value outside it is refused before anything is built. Unset (None) values are not checked.
BOUNDS = {
    "num_classes": (WHOLE, "[1, inf)"),
    "width_factor": (REAL, "(0, inf)"),
    "drop_path_rate": (REAL, "[0, 1)"),
    "patch_size": (WHOLE, "[1, inf)"),
    "embed_dim": (WHOLE, "[1, inf)"),
    "depth": (WHOLE, "[1, inf)"),
    "num_heads": (WHOLE, "[1, inf)"),
    "mlp_ratio": (REAL, "(0, inf)"),
    "init_values": (REAL, "[0, inf)"),
    "freeze_blocks": (WHOLE, "[0, inf)"),
    "mask_ratio": (REAL, "[0, 1)"),
    "decoder_embed_dim": (WHOLE, "[1, inf)"),
    "decoder_depth": (WHOLE, "[1, inf)"),
    "decoder_num_heads": (WHOLE, "[1, inf)"),
    "vocab_size": (WHOLE, "[1, inf)"),
    "early_layers": (WHOLE, "[0, inf)"),
    "head_layers": (WHOLE, "[1, inf)"),
    "second_input_size": (WHOLE, "[1, inf)"),
    "color_jitter": (REAL, "[0, inf)"),
    "num_mask_patches": (WHOLE, "[1, inf)"),
    "min_mask_patches_per_block": (WHOLE, "[1, inf)"),
    "max_mask_patches_per_block": (WHOLE, "[1, inf)"),
    "codebook_size": (WHOLE, "[1, inf)"),
    "codebook_dim": (WHOLE, "[1, inf)"),
    "codebook_decay": (REAL, "[0, 1]"),
    "export_batch_size": (WHOLE, "[1, inf)"),
    "image_size": (WHOLE, "[1, inf)"),
    "crop_ratio": (REAL, "(0, 1]"),
    "crop_min_scale": (REAL, "(0, 1]"),
    "batch_size": (WHOLE, "[1, inf)"),
    "num_parallel_workers": (WHOLE, "[1, inf)"),
    "hflip": (REAL, "[0, 1]"),
    "rand_augment_num_layers": (WHOLE, "[0, inf)"),
    "rand_augment_magnitude": (WHOLE, "[0, 30]"),
    "re_prob": (REAL, "[0, 1]"),
    "re_count": (WHOLE, "[1, inf)"),
    "mix_up": (REAL, "[0, inf)"),
    "cutmix": (REAL, "[0, inf)"),
    "mixup_prob": (REAL, "[0, 1]"),
    "switch_prob": (REAL, "[0, 1]"),
    "label_smoothing": (REAL, "[0, 1)"),
    "base_lr": (REAL, "[0, inf)"),
    "blr": (REAL, "[0, inf)"),
    "min_lr": (REAL, "[0, inf)"),
    "warmup_length": (REAL, "[0, inf)"),
    "warmup_lr": (REAL, "[0, inf)"),
    "cool_length": (REAL, "[0, inf)"),
    "cool_lr": (REAL, "[0, inf)"),
    "lr_decay": (REAL, "(0, inf)"),
    "lr_num_epochs_per_decay": (REAL, "(0, inf)"),
    "momentum": (REAL, "[0, 1)"),
    "decay": (REAL, "[0, 1)"),
    "eps": (REAL, "(0, inf)"),
    "weight_decay": (REAL, "[0, inf)"),
    "layer_decay": (REAL, "(0, 1]"),
    "epochs": (WHOLE, "[0, inf)"),
    "accum_steps": (WHOLE, "[1, inf)"),
    "loss_scale": (REAL, "(0, inf)"),
    "scale_window": (WHOLE, "[1, inf)"),
    "max_overflow_steps": (WHOLE, "[1, inf)"),
    "clip_global_norm_value": (REAL, "(0, inf)"),
    "ema_decay": (REAL, "[0, 1]"),
    "eval_interval": (WHOLE, "[0, inf)"),
    "keep_checkpoint_max": (WHOLE, "[0, inf)"),
    "save_checkpoint_steps": (WHOLE, "[0, inf)"),
    "log_interval": (WHOLE, "[1, inf)"),
    "seed": (WHOLE, "[0, inf)"),
    "device_id": (WHOLE, "[0, inf)"),
    "device_num": (WHOLE, "[1, inf)"),
    "sink_size": (WHOLE, "[-1, inf)"),
    "cache_sync_timeout": (REAL, "(0, inf)"),
}

FLAG, TEXT, MAPPING = "True or False", "text", "a mapping of argument names to values"
FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


class Numbers(NamedTuple):
    """A list of `count` numbers, each `kind` (WHOLE or REAL) in `interval`, as in BOUNDS."""
    count: int
    kind: str
    interval: str


class OneOf(NamedTuple):
    """One of a few values."""
    values: tuple


# The other keys: FLAG (one of FLAG_WORDS is taken as one: "false" is False), TEXT, MAPPING, Numbers or OneOf.
# Null is allowed where the default is null.
KINDS = {
    "task": TEXT,
    "arch": TEXT,
    "layers": Numbers(4, WHOLE, "[1, inf)"),
    "rel_pos_bias": FLAG,
    "shared_rel_pos_bias": FLAG,
    "abs_pos_emb": FLAG,
    "use_mean_pooling": FLAG,
    "global_pool": FLAG,
    "linear_probe": FLAG,
    "norm_pix_loss": FLAG,
    "shared_lm_head": FLAG,
    "tokenizer": TEXT,
    "tokenizer_pretrained": TEXT,
    "tokenizer_args": MAPPING,
    "second_interpolation": TEXT,
    "quantize_kmeans_init": FLAG,
    "teacher": TEXT,
    "teacher_pretrained": TEXT,
    "teacher_args": MAPPING,
    "teacher_mean": Numbers(3, REAL, "[0, 1]"),
    "teacher_std": Numbers(3, REAL, "(0, 1]"),
    "pretrained": TEXT,
    "file_format": TEXT,
    "file_name": TEXT,
    "resume": TEXT,
    "set": TEXT,
    "file_list": TEXT,
    "data_url": TEXT,
    "train_url": TEXT,
    "interpolation": TEXT,
    "mean": Numbers(3, REAL, "[0, 1]"),
    "std": Numbers(3, REAL, "(0, 1]"),
    "auto_augment": TEXT,
    "re_mode": TEXT,
    "mixup_mode": OneOf(("batch",)),
    "optimizer": TEXT,
    "lr_scheduler": TEXT,
    "beta": Numbers(2, REAL, "[0, 1)"),
    "filter_bias_and_bn": FLAG,
    "recompute": FLAG,
    "amp_level": TEXT,
    "keep_bn_fp32": FLAG,
    "is_dynamic_loss_scale": FLAG,
    "use_global_norm": FLAG,
    "enable_ema": FLAG,
    "eval_use_ema": FLAG,
    "deterministic": FLAG,
    "device_target": TEXT,
    "graph_mode": FLAG,
    "dataset_sink_mode": FLAG,
    "save_all_ranks": FLAG,
    "run_modelarts": FLAG,
    "cache_dir": TEXT,
}


def number(text):
    """An int where the text is one, else a float: `--loss_scale 1024` and `--loss_scale 0.5` both work."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def value_parser(key):
    """Parse a command-line string into the kind of value `key` holds (the checks below refuse what does not fit)."""
    default = DEFAULTS[key][0]
    if key in BOUNDS and default is not None:
        return number
    if KINDS.get(key) in (FLAG, TEXT):
        return optional_text
    # lists, mappings and unset (None) values are read as YAML, so "[1, 1, 1, 1]" and "null" work
    return yaml_value


def optional_text(text):
    """The text as it is (a path named 7 stays "7"), None for YAML's null."""
    return None if text in ("null", "Null", "NULL", "~") else text


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise UserInputError(message)


def parse_args(argv=None, published_settings=False):
    """Return the merged configuration as an argparse.Namespace. With `published_settings`, a published name
    given as --pretrained without --config brings the settings its weights were made for (src/weights/zoo.py).
    `--list_pretrained` prints the published names and exits."""
    argv = sys.argv[1:] if argv is None else argv

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--pretrained", default=None)
    pre.add_argument("--list_pretrained", action="store_true")
    pre_args, _ = pre.parse_known_args(argv)
    if pre_args.list_pretrained:
        print(published_table())
        raise SystemExit(0)

    values = {key: default for key, (default, _) in DEFAULTS.items()}
    entry = find_published(pre_args.pretrained)
    if published_settings and not pre_args.config and entry and not os.path.isfile(pre_args.pretrained):
        values.update(entry.settings)
    config = _checked_yaml(pre_args.config) if pre_args.config else {}
    values.update(config)

    parser = _ArgumentParser(allow_abbrev=False, description="YAML config with command-line overrides")
    parser.add_argument("--config", default=None, help="YAML config file")
    parser.add_argument("--list_pretrained", action="store_true", default=argparse.SUPPRESS,
                        help="print the published names and exit")
    for key, (_, help_text) in DEFAULTS.items():
        option_names = [f"--{key}"] + [f"--{alias}" for alias, name in ALIASES.items() if name == key]
        parser.add_argument(*option_names, dest=key, type=value_parser(key), default=values[key],
                            help=help_text)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        key = unknown[0].lstrip("-").split("=")[0]
        raise UserInputError(unknown_key_message(key, list(DEFAULTS) + list(ALIASES), "the command line"))
    _check_values(args, config_keys=set(config), command_line_keys=_command_line_keys(argv))
    return args


def _command_line_keys(argv):
    """The canonical keys that `argv` sets."""
    keys = set()
    for token in argv:
        if token.startswith("--"):
            key = token[2:].split("=")[0]
            keys.add(ALIASES.get(key, key))
    return keys


def _check_values(args, config_keys, command_line_keys):
    """Every value of the kind its key holds (BOUNDS, KINDS), and no values that conflict."""
    for key, (default, _) in DEFAULTS.items():
        value = getattr(args, key)
        if value is None and default is None:
            continue
        setattr(args, key, _checked_number(key, value) if key in BOUNDS else _checked_kind(key, value))
    if args.blr is not None:
        if "base_lr" in command_line_keys:
            raise UserInputError(f"--base_lr conflicts with blr {args.blr}: the lr is blr x effective batch / 256; "
                                 "pass --blr instead (or --blr null with --base_lr)")
        if {"base_lr", "blr"} <= config_keys and "blr" not in command_line_keys:
            raise UserInputError("the config sets both base_lr and blr: keep one")


def _checked_number(key, value, bounds=None):
    """`value` of `key` checked against its BOUNDS (or `bounds`), an int where a whole number is asked for. Text
    that reads as a number is taken as one: YAML reads 5e-4 (no dot) as text."""
    kind, interval = bounds or BOUNDS[key]
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    refusal = UserInputError(f"{key} must be {kind} in {interval}, got {reprlib.repr(number)}")
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise refusal
    if kind == WHOLE:
        if not math.isfinite(number) or number != int(number):
            raise refusal
        number = int(number)
    low, high = (float(end) for end in interval[1:-1].split(","))
    above = number >= low if interval[0] == "[" else number > low
    below = number <= high if interval[-1] == "]" else number < high
    if not (above and below):
        raise refusal
    return number


def _checked_kind(key, value):
    """`value` of `key` checked against its KINDS entry."""
    kind = KINDS[key]
    if kind == FLAG and not isinstance(value, bool):
        value = FLAG_WORDS.get(str(value).lower(), value)
    if kind == FLAG and isinstance(value, bool) or kind == TEXT and isinstance(value, str):
        return value
    if kind == MAPPING and isinstance(value, dict) and all(isinstance(name, str) for name in value):
        return value
    if isinstance(kind, Numbers):
        try:
            if isinstance(value, (list, tuple)) and len(value) == kind.count:
                return [_checked_number(key, number, (kind.kind, kind.interval)) for number in value]
        except UserInputError:
            pass
        raise UserInputError(f"{key} must be a list of {kind.count} numbers, each {kind.kind} in {kind.interval}, "
                             f"got {reprlib.repr(value)}")
    if isinstance(kind, OneOf):
        if value in kind.values:
            return value
        raise UserInputError(f"{key} must be one of {list(kind.values)}, got {reprlib.repr(value)}")
    raise UserInputError(f"{key} must be {kind}, got {reprlib.repr(value)}")


def split_arguments(argv):
    """(images, options): every `--key value` / `--key=value` is an option, the other words are images."""
    images, options, index = [], [], 0
    while index < len(argv):
        token = argv[index]
        width = 2 if token.startswith("--") and "=" not in token else 1
        (options if token.startswith("--") else images).extend(argv[index:index + width])
        index += width
    return images, options


def _checked_yaml(path):
    """The YAML file's values under their canonical keys; unknown or repeated keys are errors."""
    raw = load_yaml_config(path)
    config = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key)
        if name not in DEFAULTS:
            raise UserInputError(unknown_key_message(key, list(DEFAULTS) + list(ALIASES), path))
        if name in config:
            raise UserInputError(f"config key '{name}' is given twice in {path} (as '{key}' too)")
        config[name] = value
    return config
