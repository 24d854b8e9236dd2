"""Data sinking: when it is on, how steps are grouped and counted, where logs, checkpoints and resumes fall.
MindSpore 2.10 sinks on Ascend and GPU only, so the device transfer is stood in for by a function that runs
the same number of steps from the host."""
import argparse

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from conftest import TINY_CONFIG, assert_one_line_error, run_script
from mindspore.train.callback import Callback

from src.engine.callbacks import StepLogger
from src.engine.loop import sink_size_for, train_epochs
from src.errors import UserInputError


def settings(device, sink=None, size=-1):
    return argparse.Namespace(device_target=device, dataset_sink_mode=sink, sink_size=size)


def test_sinking_is_on_by_default_on_ascend_only_and_the_cpu_says_it_steps():
    messages = []
    assert sink_size_for(settings("Ascend"), 12, False, messages.append) == 12
    assert sink_size_for(settings("Ascend", size=4), 12, False, messages.append) == 4
    assert sink_size_for(settings("GPU"), 12, False, messages.append) == 0
    assert sink_size_for(settings("GPU", True, 3), 12, False, messages.append) == 3
    assert messages == []
    assert sink_size_for(settings("CPU", True), 12, False, messages.append) == 0
    assert sink_size_for(settings("Ascend"), 12, True, messages.append) == 0
    assert messages == ["dataset_sink_mode: MindSpore sinks data on Ascend and GPU only; the CPU trains step by step",
                        "dataset_sink_mode off: gradient accumulation feeds its micro-batches from the host"]
    for device in ("CPU", "Ascend"):
        with pytest.raises(UserInputError, match="sink_size 5 does not divide the 12 steps of an epoch"):
            sink_size_for(settings(device, True, 5), 12, False, messages.append)


def host_sink(train_step, dataset, sink_size, epochs):
    """What ms.data_sink does, from the host: each call runs sink_size steps, returns the last outputs."""
    iterator = dataset.create_tuple_iterator(num_epochs=epochs)

    def next_batch():
        try:
            return next(iterator)
        except StopIteration:  # the end of an epoch; the next one follows
            return next(iterator)

    def run_group():
        for _ in range(sink_size):
            outputs = train_step(*next_batch())
        return outputs
    return run_group


class RecordSteps(Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_step_end(self, run_context):
        self.steps.append(run_context.original_args().cur_step_num)


class Step:
    """A train step that records the rows it was given."""

    def __init__(self):
        self.rows = []

    def set_train(self, mode=True):
        return self

    def __call__(self, row):
        self.rows.append(int(row.asnumpy()[0]))
        return ms.Tensor(float(len(self.rows))), ms.Tensor(False), ms.Tensor(1.0)


def rows_dataset():
    return ds.NumpySlicesDataset({"row": np.arange(12, dtype=np.int32)}, shuffle=False).batch(1)


@pytest.mark.parametrize("sink_size", [0, 4])
def test_groups_log_and_resume_at_sink_boundaries(sink_size):
    step, record, lines = Step(), RecordSteps(), []
    logger = StepLogger(steps_per_epoch=12, log_interval=6, log=lines.append)
    train_epochs(step, rows_dataset(), 2, [record, logger], sink_size=sink_size, sink=host_sink)
    assert step.rows == list(range(12)) * 2
    losses = [line for line in lines if "loss is" in line]
    if sink_size:
        assert record.steps == [4, 8, 12, 16, 20, 24]
        # step 6 falls inside the group 5..8: its log line comes at the group's end, with that step's loss
        assert losses == ["epoch: 1 step: 8, loss is 8.0", "epoch: 1 step: 12, loss is 12.0",
                          "epoch: 2 step: 8, loss is 20.0", "epoch: 2 step: 12, loss is 24.0"]
    else:
        assert record.steps == list(range(1, 25))
        assert losses == ["epoch: 1 step: 6, loss is 6.0", "epoch: 1 step: 12, loss is 12.0",
                          "epoch: 2 step: 6, loss is 18.0", "epoch: 2 step: 12, loss is 24.0"]

    resumed, record = Step(), RecordSteps()
    train_epochs(resumed, rows_dataset(), 2, [record], start_step=16, sink_size=sink_size, sink=host_sink)
    assert resumed.rows == list(range(4, 12))  # the dataset continues where the run stopped
    assert record.steps == ([20, 24] if sink_size else list(range(17, 25)))


def test_a_resume_inside_a_sink_group_is_refused():
    with pytest.raises(UserInputError, match="the checkpoint is at step 6, inside a sink of 4 steps"):
        train_epochs(Step(), rows_dataset(), 2, start_step=6, sink_size=4, sink=host_sink)


def test_train_reports_a_sink_size_that_does_not_divide_an_epoch(small_digits):
    result = run_script("train.py", "--config", TINY_CONFIG, "--data_url", small_digits, "--batch_size", "16",
                        "--dataset_sink_mode", "True", "--sink_size", "3")
    assert_one_line_error(result, "sink_size 3 does not divide the 8 steps of an epoch")
