"""export.py: the exported MINDIR, loaded as a GraphCell, gives the checkpoint's logits."""
import mindspore as ms
import numpy as np
from conftest import TINY_CONFIG, assert_one_line_error, run_script
from mindspore import nn

from src.args import parse_args
from src.models import create_model_from_args
from src.weights.checkpoint import save_checkpoint


def test_mindir_round_trip_gives_the_same_logits(tmp_path):
    args = parse_args(["--config", TINY_CONFIG])
    network = create_model_from_args(args, zero_head=False)  # a non-zero head, so the logits say something
    network.set_train(False)
    save_checkpoint(network, str(tmp_path / "tiny.ckpt"))
    result = run_script("export.py", "--config", TINY_CONFIG, "--pretrained", str(tmp_path / "tiny.ckpt"),
                        "--batch_size", "2", "--file_name", str(tmp_path / "out" / "bit_tiny"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"as {tmp_path / 'out' / 'bit_tiny'}.mindir: input (2, 3, 32, 32)" in result.stdout
    # MindSpore's own kernels only: no Custom op bound to the fused CPU kernels compiled on this machine
    assert b"cpu_conv_kernels" not in (tmp_path / "out" / "bit_tiny.mindir").read_bytes()
    graph = nn.GraphCell(ms.load(str(tmp_path / "out" / "bit_tiny.mindir")))
    images = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    expected = network(images).asnumpy()
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(graph(images).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_air_elsewhere_than_ascend_is_a_clear_error(tmp_path):
    result = run_script("export.py", "--config", TINY_CONFIG, "--pretrained", "x.ckpt", "--file_format", "AIR")
    assert_one_line_error(result, "AIR export needs the Ascend backend")
