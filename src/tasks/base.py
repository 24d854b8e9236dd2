"""What every training task shares: building the model (its noise seed, initial weights from `pretrained`) and
loading a frozen helper network (a tokenizer, a teacher) from its own checkpoint."""
from src.models import create_model, create_model_from_args
from src.models.layers import seed_noise
from src.weights.loading import load_weights
from src.weights.pretrained import pretrained_weights


class Task:
    """A training task. Subclasses say what they read and build:

    - `name`: the value of the config key `task`;
    - `config_keys`: the config keys the task itself reads (beyond the model's and the common ones);
    - `dataset_view`: the rows its loss cell takes (see src.data.create_dataset);
    - `evaluates`: whether training evaluates on the validation set;
    - `check()`: config errors found before anything is built;
    - `build_helper(log)`: the frozen network the loss needs, or None;
    - `model_arguments(helper)`: constructor arguments the model takes from the helper;
    - `loss_cell(network, helper)`: the cell computing the loss from a dataset row;
    - `prepare(network, train_data, log)`: one-off initialisation from data before a fresh run.
    """
    name = None
    config_keys = frozenset()
    dataset_view = "labeled"
    # helper networks are rebuilt from their own files: checkpoints and resumes leave them out
    frozen_prefixes = ("tokenizer.", "teacher_model.")

    def __init__(self, args):
        self.args = args

    @property
    def evaluates(self):
        return False

    def check(self):
        pass

    def build_helper(self, log):
        return None

    def model_arguments(self, helper):
        return {}

    def loss_cell(self, network, helper):
        raise NotImplementedError

    def prepare(self, network, train_data, log):
        pass

    def frozen_param(self, name):
        return name.startswith(self.frozen_prefixes)

    def build_networks(self, seed, log=print):
        """(the model to train, its frozen helper or None). The model's noise streams come from `seed`; it is
        initialised from `pretrained`: a classifier head of another class count, or one missing from a
        pretraining checkpoint, starts anew."""
        helper = self.build_helper(log)
        network = seed_noise(create_model_from_args(self.args, **self.model_arguments(helper)), seed)
        pretrained = self.args.pretrained
        if pretrained:
            head = getattr(network, "classifier_name", "head") + "."
            # what a pretraining checkpoint lacks: the classifier, mean pooling's fc_norm, linear probing's BatchNorm
            load_weights(network, pretrained_weights(network, pretrained), pretrained,
                         head_prefixes=(head,), missing_ok=(head, "fc_norm.", "head_norm."), log=log)
        return network, helper


def frozen_helper(name, pretrained, overrides, what, log):
    """A tokenizer or teacher: built by name, loaded from its checkpoint (random weights only for smoke runs)."""
    network = create_model(name, **overrides)
    if pretrained:
        load_weights(network, pretrained_weights(network, pretrained), pretrained, log=log)
    else:
        log(f"warning: the {what} {name} has random weights (no checkpoint given): for smoke tests only")
    network.set_train(False)
    return network
