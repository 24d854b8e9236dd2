"""The training loop: `Model.train`'s loop, able to start at any step of an epoch, step by step or in data-sink
groups.

Model.train resumes at epoch boundaries only. Here the dataset is told the global step to start from
(`set_init_step`): the sampler and, with fast recovery off (deterministic mode), the random
augmentations continue exactly where the killed run stopped. Callbacks are MindSpore Callbacks; their
`cur_step_num` counts steps from the start of training, across resumes, and `steps_in_call` says how many
steps the last call ran (1, or sink_size when sinking).
"""
import mindspore as ms
from mindspore.train.callback import RunContext

from src.errors import UserInputError


class CallbackParams(dict):
    """What `run_context.original_args()` returns: a dict whose keys read as attributes, as Model's."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def sink_size_for(args, steps_per_epoch, accumulating, log):
    """Steps per data-sink call, or 0 for the per-step loop. Sinking (on by default on Ascend, as the model zoo)
    hands sink_size steps at a time to the device; MindSpore 2.10 refuses it on the CPU."""
    sink = args.dataset_sink_mode if args.dataset_sink_mode is not None else args.device_target == "Ascend"
    if not sink:
        return 0
    size = steps_per_epoch if args.sink_size in (None, -1, 0) else args.sink_size
    if size < 1 or steps_per_epoch % size:
        raise UserInputError(f"sink_size {args.sink_size} does not divide the {steps_per_epoch} steps of an epoch")
    if args.device_target == "CPU":
        log("dataset_sink_mode: MindSpore sinks data on Ascend and GPU only; the CPU trains step by step")
        return 0
    if accumulating:
        log("dataset_sink_mode off: gradient accumulation feeds its micro-batches from the host")
        return 0
    return size


def device_sink(train_step, dataset, sink_size, epochs):
    """A function that runs `sink_size` train steps on the device per call and returns the last step's outputs
    (the transfer queue runs on across epochs)."""
    return ms.data_sink(train_step, dataset, sink_size=sink_size)


def epoch_batches(iterator):
    """The batches of a MindSpore iterator across epochs (it ends each epoch with a StopIteration); ends at the
    first epoch that yields nothing."""
    while True:
        count = 0
        for count, batch in enumerate(iterator, 1):
            yield batch
        if count == 0:
            return


def train_epochs(train_step, dataset, epochs, callbacks=(), start_step=0, sink_size=0, sink=device_sink):
    """Run train steps from global step `start_step` to the end of epoch `epochs`: one per batch, or with
    `sink_size`, groups of that many through `sink` (callbacks then see the group's end). A callback may stop
    the run early with `run_context.request_stop()`. Returns the global step reached."""
    steps_per_epoch = dataset.get_dataset_size()
    if sink_size and start_step % sink_size:
        raise UserInputError(f"the checkpoint is at step {start_step}, inside a sink of {sink_size} steps: resume "
                             "it with --dataset_sink_mode False")
    if start_step:
        dataset.set_init_step(start_step)
    if sink_size:
        run_group = sink(train_step, dataset, sink_size, epochs)
    else:
        # num_epochs counts from the first epoch even when the iterator starts later
        batches = epoch_batches(dataset.create_tuple_iterator(num_epochs=epochs))
    params = CallbackParams(train_network=train_step, batch_num=steps_per_epoch, epoch_num=epochs,
                            cur_epoch_num=start_step // steps_per_epoch, cur_step_num=start_step, net_outputs=None,
                            steps_in_call=sink_size or 1)
    context = RunContext(params)

    def notify(event):
        for callback in callbacks:
            getattr(callback, event)(context)

    train_step.set_train(True)
    notify("on_train_begin")
    for epoch in range(start_step // steps_per_epoch, epochs):
        params.cur_epoch_num = epoch + 1
        notify("on_train_epoch_begin")
        while params.cur_step_num < (epoch + 1) * steps_per_epoch and not context.get_stop_requested():
            if sink_size:
                params.net_outputs = run_group()
            else:
                params.net_outputs = train_step(*next(batches))
            params.cur_step_num += sink_size or 1
            notify("on_train_step_end")
        if context.get_stop_requested():  # a graceful stop: the callback that asked has saved
            break
        notify("on_train_epoch_end")
    notify("on_train_end")
    return params.cur_step_num
