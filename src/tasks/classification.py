"""Supervised classification (fine-tuning, linear probing, training from scratch): rows (image, label) ->
criterion(model(image), label), evaluated on the validation set."""
from mindspore import nn

from src.data import uses_mixup
from src.engine.criterion import create_criterion
from src.errors import UserInputError
from src.tasks.base import Task


class Classification(Task):
    name = "classification"
    config_keys = frozenset({"linear_probe", "freeze_blocks"})

    @property
    def evaluates(self):
        return self.args.eval_interval > 0

    def build_networks(self, seed, log=print):
        network, helper = super().build_networks(seed, log)
        if self.args.linear_probe or self.args.freeze_blocks:
            self.freeze(network)
        return network, helper

    def freeze(self, network):
        """Linear probing trains the head only; `freeze_blocks` N also freezes the embeddings and blocks 0..N-1."""
        args = self.args
        if not hasattr(network, "blocks"):
            raise UserInputError(f"linear_probe / freeze_blocks are for ViTs; {args.arch} has no transformer blocks")
        frozen_blocks = tuple(f"blocks.{index}." for index in range(args.freeze_blocks))
        for param in network.get_parameters():
            if args.linear_probe:
                param.requires_grad = param.name.startswith("head.")
            elif param.name.startswith(("patch_embed.", "cls_token", "pos_embed") + frozen_blocks):
                param.requires_grad = False

    def loss_cell(self, network, helper):
        return nn.WithLossCell(network, create_criterion(self.args, soft_targets=uses_mixup(self.args)))
