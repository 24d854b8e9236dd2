"""Evaluation under data parallel: each rank's share of the validation set, summed over the ranks, is the
whole set, with no image dropped or counted twice; the sums travel exactly."""
import mindspore as ms
import numpy as np
from conftest import TINY_CONFIG
from mindspore import nn

from src.args import parse_args
from src.data import create_dataset
from src.engine.evaluation import evaluate
from src.models import create_model_from_args


def test_the_shares_of_two_ranks_add_up_to_the_whole_set(small_digits):
    ms.set_context(mode=ms.GRAPH_MODE)
    args = parse_args(["--config", TINY_CONFIG, "--data_url", small_digits, "--batch_size", "16"])
    network = create_model_from_args(args)
    whole = evaluate(network, create_dataset(args, training=False))
    shares = [create_dataset(args, training=False, num_shards=2, shard_id=rank) for rank in (0, 1)]
    assert [share.get_dataset_size() for share in shares] == [2, 2]  # 32 and 31 of the 63 digits
    labels = [np.concatenate([batch[1] for batch in share.create_tuple_iterator(num_epochs=1, output_numpy=True)])
              for share in shares]
    everything = np.concatenate([batch[1] for batch in
                                 create_dataset(args, training=False).create_tuple_iterator(num_epochs=1,
                                                                                            output_numpy=True)])
    np.testing.assert_array_equal(labels[0], everything[0::2])
    np.testing.assert_array_equal(labels[1], everything[1::2])

    # the other rank's sums arrive as they would from the collective
    other = evaluate(network, shares[1])
    other_sums = np.array([other["num_samples"], other["top1"] * other["num_samples"],
                           other["top5"] * other["num_samples"], other["loss"] * other["num_samples"],
                           other["left_out"]])
    combined = evaluate(network, shares[0], sum_over_ranks=lambda mine: np.asarray(mine, np.float64) + other_sums)
    assert combined["num_samples"] == whole["num_samples"] == 63
    assert (combined["top1"], combined["top5"]) == (whole["top1"], whole["top5"])
    assert abs(combined["loss"] - whole["loss"]) < 1e-12


def test_sums_cross_a_float32_collective_in_float64_precision(monkeypatch):
    """sum_over_ranks sends each float64 as two float32 parts: a loss sum keeps its float64 digits."""
    from src.runtime import context

    class TwoRanks(nn.Cell):  # stands in for AllGather: this rank's row and another's
        def __call__(self, row):
            mine = row.asnumpy()
            return ms.Tensor(np.concatenate([mine, mine * 0.5]))

    monkeypatch.setattr(context.ops, "AllGather", TwoRanks)
    values = [50000.0, 41234.0, 48000.0, 12345.678901234567]
    np.testing.assert_allclose(context.sum_over_ranks(values), np.array(values) * 1.5, rtol=1e-12)
