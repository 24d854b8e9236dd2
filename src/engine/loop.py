"""The training loop: `Model.train`'s non-sink loop, able to start at any step of an epoch.

Model.train resumes at epoch boundaries only. Here the dataset is told the global step to start from
(`set_init_step`): the sampler and, with fast recovery off (deterministic mode), the random
augmentations continue exactly where the killed run stopped. Callbacks are MindSpore Callbacks; their
`cur_step_num` counts steps from the start of training, across resumes.
"""
from mindspore.train.callback import RunContext


class CallbackParams(dict):
    """What `run_context.original_args()` returns: a dict whose keys read as attributes, as Model's."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def train_epochs(train_cell, dataset, epochs, callbacks=(), start_step=0):
    """Run train steps from global step `start_step` to the end of epoch `epochs`."""
    steps_per_epoch = dataset.get_dataset_size()
    if start_step:
        dataset.set_init_step(start_step)
    # num_epochs counts from the first epoch even when the iterator starts later
    iterator = dataset.create_tuple_iterator(num_epochs=epochs)
    params = CallbackParams(train_network=train_cell, batch_num=steps_per_epoch, epoch_num=epochs,
                             cur_epoch_num=start_step // steps_per_epoch, cur_step_num=start_step, net_outputs=None)
    context = RunContext(params)

    def notify(event):
        for callback in callbacks:
            getattr(callback, event)(context)

    train_cell.set_train(True)
    notify("on_train_begin")
    for epoch in range(start_step // steps_per_epoch, epochs):
        params.cur_epoch_num = epoch + 1
        notify("on_train_epoch_begin")
        for batch in iterator:
            params.cur_step_num += 1
            params.net_outputs = train_cell(*batch)
            notify("on_train_step_end")
        notify("on_train_epoch_end")
    notify("on_train_end")
