"""BEiT / BEiT v2 masked image modeling: rows (image, tokenizer_image, bool_masked_pos) -> the cross-entropy
of the model's predictions on the masked patches against the frozen tokenizer's codes."""
from src.errors import UserInputError
from src.models.beit.beit_pretrain import MaskedImageModelingLoss
from src.tasks.base import Task, frozen_helper


class BeitPretrain(Task):
    name = "beit_pretrain"
    config_keys = frozenset({"tokenizer", "tokenizer_pretrained", "tokenizer_args", "second_input_size",
                             "second_interpolation", "num_mask_patches", "min_mask_patches_per_block",
                             "max_mask_patches_per_block", "color_jitter"})
    dataset_view = "masked_image_modeling"

    def check(self):
        if not self.args.tokenizer:
            raise UserInputError("task beit_pretrain needs a tokenizer (dall_e_encoder or a vqkd_* model)")
        if self.args.set != "ImageFolder":
            raise UserInputError(f"task beit_pretrain reads unlabeled images: set ImageFolder, not {self.args.set}")

    def build_helper(self, log):
        args = self.args
        return frozen_helper(args.tokenizer, args.tokenizer_pretrained,
                             {"img_size": args.second_input_size, "as_tokenizer": True, **(args.tokenizer_args or {})},
                             "tokenizer", log)

    def loss_cell(self, network, helper):
        return MaskedImageModelingLoss(network, helper)
