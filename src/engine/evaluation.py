"""Top-1 / top-5 accuracy and cross-entropy of a classifier over a dataset."""
import numpy as np

from src.data.imagenet import LEFT_OUT
from src.runtime.progress import progress


def evaluate(network, dataset, show_progress=False, sum_over_ranks=None):
    """{'top1', 'top5', 'loss', 'num_samples'} of `network` on a batched (image, label) dataset; with
    `show_progress`, a progress bar (or plain lines in a log) on stderr. Under data parallel each rank
    evaluates its share and `sum_over_ranks` adds up the counts and loss sums of all ranks. Rows labeled
    LEFT_OUT (unreadable images) are not evaluated: `num_samples` counts the evaluated images, `left_out` the
    others."""
    was_training = network.training
    network.set_train(False)
    num_samples, correct1, correct5, loss_sum, left_out = 0, 0, 0, 0.0, 0
    batches = dataset.create_tuple_iterator(num_epochs=1)
    for images, labels in progress(batches, dataset.get_dataset_size(), "evaluating", show=show_progress):
        logits = network(images).asnumpy().astype(np.float64)
        labels = labels.asnumpy().astype(np.int64)
        evaluated = labels != LEFT_OUT
        left_out += int((~evaluated).sum())
        logits, labels = logits[evaluated], labels[evaluated]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-log_probs[np.arange(len(labels)), labels].sum())
        top5 = np.argsort(-logits, axis=1)[:, :5]
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
        num_samples += len(labels)
    network.set_train(was_training)
    if sum_over_ranks is not None:
        num_samples, correct1, correct5, loss_sum, left_out = sum_over_ranks(
            [num_samples, correct1, correct5, loss_sum, left_out])
        num_samples, correct1, correct5, left_out = (int(round(count)) for count in
                                                     (num_samples, correct1, correct5, left_out))
    if num_samples == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "num_samples": 0, "left_out": left_out}
    return {"top1": correct1 / num_samples, "top5": correct5 / num_samples, "loss": loss_sum / num_samples,
            "num_samples": num_samples, "left_out": left_out}
