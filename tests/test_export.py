"""export.py: the exported MINDIR (as a GraphCell) and ONNX (in ONNX Runtime) graphs of every classifier
family give the checkpoint's logits."""
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT, TINY_CONFIG, assert_one_line_error, run_script
from mindspore import nn

from src.args import parse_args
from src.models import create_model_from_args
from src.weights.checkpoint import save_checkpoint

CONFIGS = {
    "bit": [TINY_CONFIG],
    "beit": [os.path.join(ROOT, "src", "configs", "beit_tiny_imagenet_cpu.yaml")],
    "mae_vit": [os.path.join(ROOT, "src", "configs", "mae_transfer_finetune_cpu.yaml"), "--depth", "2"],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{family: (config arguments, checkpoint path, network)}; heads drawn anew so that the logits say something
    (BiT's starts at zero, MAE's at std 2e-5)."""
    folder = tmp_path_factory.mktemp("export")
    made = {}
    rng = np.random.default_rng(0)
    for family, config in CONFIGS.items():
        arguments = ["--config", *config]
        network = create_model_from_args(parse_args(arguments))
        for param in network.get_parameters():
            if param.name.startswith("head."):
                param.set_data(ms.Tensor(rng.normal(0, 0.1, param.shape).astype(np.float32)))
        network.set_train(False)
        path = str(folder / f"{family}.ckpt")
        save_checkpoint(network, path)
        made[family] = (arguments, path, network)
    return made


@pytest.mark.parametrize("file_format", ["MINDIR", "ONNX"])
@pytest.mark.parametrize("family", CONFIGS)
def test_exported_graphs_give_the_checkpoints_logits(checkpoints, family, file_format, tmp_path):
    arguments, checkpoint, network = checkpoints[family]
    image_size = parse_args(arguments).image_size
    out = tmp_path / "out" / family
    result = run_script("export.py", *arguments, "--pretrained", checkpoint, "--file_format", file_format,
                        "--export_batch_size", "2", "--file_name", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    suffix = file_format.lower()
    assert f"as {out}.{suffix}: input (2, 3, {image_size}, {image_size})" in result.stdout
    # MindSpore's standard operators only: no Custom op bound to the kernels compiled on this machine
    assert b"cpu_kernels" not in (tmp_path / "out" / f"{family}.{suffix}").read_bytes()
    images = np.random.default_rng(1).standard_normal((2, 3, image_size, image_size)).astype(np.float32)
    expected = network(ms.Tensor(images)).asnumpy()
    assert np.abs(expected).max() > 1e-2
    if file_format == "MINDIR":
        logits = nn.GraphCell(ms.load(f"{out}.mindir"))(ms.Tensor(images)).asnumpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(f"{out}.onnx", providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_air_elsewhere_than_ascend_and_a_bad_batch_are_clear_errors(tmp_path):
    result = run_script("export.py", "--config", TINY_CONFIG, "--pretrained", "x.ckpt", "--file_format", "AIR")
    assert_one_line_error(result, "AIR export needs the Ascend backend")
    model = create_model_from_args(parse_args(["--config", TINY_CONFIG]))
    save_checkpoint(model, str(tmp_path / "tiny.ckpt"))
    result = run_script("export.py", "--config", TINY_CONFIG, "--pretrained", str(tmp_path / "tiny.ckpt"),
                        "--export_batch_size", "0")
    assert_one_line_error(result, "export_batch_size must be a whole number in [1, inf), got 0")


def test_the_operators_written_out_for_export_equal_mindspores(request):
    from mindspore import ops

    from src.ops.cpu_kernels import GELU, GroupNorm, use_portable_operators

    previous = use_portable_operators(True)
    request.addfinalizer(lambda: use_portable_operators(previous))
    x = ms.Tensor(np.linspace(-12, 12, 4001, dtype=np.float32))
    gelu = GELU()
    assert gelu.portable and not gelu.fused
    np.testing.assert_allclose(gelu(x).asnumpy(), ops.gelu(x, approximate="none").asnumpy(), rtol=0, atol=1e-6)
    images = ms.Tensor(np.random.default_rng(0).standard_normal((2, 64, 5, 5)).astype(np.float32) * 3 + 1)
    portable, reference = GroupNorm(32, 64, relu=True), nn.GroupNorm(32, 64)
    for cell in (portable, reference):
        cell.gamma.set_data(ms.Tensor(np.linspace(0.5, 1.5, 64, dtype=np.float32)))
        cell.beta.set_data(ms.Tensor(np.linspace(-1, 1, 64, dtype=np.float32)))
    np.testing.assert_allclose(portable(images).asnumpy(), ops.relu(reference(images)).asnumpy(), rtol=0, atol=1e-5)
