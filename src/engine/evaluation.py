"""Top-1 / top-5 accuracy and cross-entropy of a classifier over a dataset."""
import numpy as np

from src.runtime.progress import progress


def evaluate(network, dataset, show_progress=False, sum_over_ranks=None):
    """{'top1', 'top5', 'loss', 'num_samples'} of `network` on a batched (image, label) dataset; with
    `show_progress`, a progress bar (or plain lines in a log) on stderr. Under data parallel each rank
    evaluates its share and `sum_over_ranks` adds up the counts and loss sums of all ranks."""
    was_training = network.training
    network.set_train(False)
    num_samples, correct1, correct5, loss_sum = 0, 0, 0, 0.0
    batches = dataset.create_tuple_iterator(num_epochs=1)
    for images, labels in progress(batches, dataset.get_dataset_size(), "evaluating", show=show_progress):
        logits = network(images).asnumpy().astype(np.float64)
        labels = labels.asnumpy().astype(np.int64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss_sum += float(-log_probs[np.arange(len(labels)), labels].sum())
        top5 = np.argsort(-logits, axis=1)[:, :5]
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
        num_samples += len(labels)
    network.set_train(was_training)
    if sum_over_ranks is not None:
        num_samples, correct1, correct5, loss_sum = sum_over_ranks([num_samples, correct1, correct5, loss_sum])
        num_samples, correct1, correct5 = (int(round(count)) for count in (num_samples, correct1, correct5))
    if num_samples == 0:
        return {"top1": 0.0, "top5": 0.0, "loss": float("nan"), "num_samples": 0}
    return {"top1": correct1 / num_samples, "top5": correct5 / num_samples, "loss": loss_sum / num_samples,
            "num_samples": num_samples}
