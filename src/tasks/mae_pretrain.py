"""MAE pretraining: rows (image, label), labels ignored; the model masks, encodes, decodes and computes its
own normalised-pixel loss."""
from src.models.mae.mae import MaePretrainLoss
from src.tasks.base import Task


class MaePretrain(Task):
    name = "mae_pretrain"

    def loss_cell(self, network, helper):
        return MaePretrainLoss(network)
