"""Files from strangers never run code: pickles that call torch functions which execute code or touch
files are refused, naming the refused global, through conv_pt2ckpt.py and through --pretrained; the
torch-free reader still rebuilds every kind of tensor a real checkpoint holds."""
import copyreg
import json
import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_script

from src.errors import UserInputError
from src.weights.torch_format import read_torch_file


class Call:
    """Pickles as a call of `function(*args)`: what a hostile checkpoint holds."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


class ExecSource:
    """Reduced through copyreg's dispatch table (below) to builtins.exec(source)."""

    def __init__(self, source):
        self.source = source


copyreg.pickle(ExecSource, lambda payload: (exec, (payload.source,)))


def write_marker(marker):
    return f"open({marker!r}, 'w').write('ran')"


REFUSED = ("torch.fx.graph_module._exec_with_source", "torch.serialization.load", "torch.serialization.save",
           "builtins.exec")


def payload(refused, tmp_path, marker):
    """An object that calls the global `refused` when unpickled, writing `marker`."""
    inner = tmp_path / (os.path.basename(marker) + ".inner.pkl")
    with open(inner, "wb") as file:
        pickle.dump(ExecSource(write_marker(marker)), file, protocol=2)
    from torch.fx.graph_module import _exec_with_source
    return {
        "torch.fx.graph_module._exec_with_source": Call(_exec_with_source, (write_marker(marker), {})),
        # run with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1: a nested torch.load would run the inner pickle
        "torch.serialization.load": Call(torch.load, (str(inner),)),
        "torch.serialization.save": Call(torch.save, ("ran", marker)),
        "builtins.exec": ExecSource(write_marker(marker)),
    }[refused]


def write_hostile_files(tmp_path):
    """{path: (refused global, marker)}: each payload at protocols 2 and 4, bare and inside a dict, pickled
    plainly (.pkl) and in torch's zip format (.pth, and .pkl as DALL-E's encoder)."""
    files = {}
    for index, refused in enumerate(REFUSED):
        for protocol in (2, 4):
            for container in ("bare", "dict"):
                for fmt in ("pkl", "zip.pth", "zip.pkl"):
                    name = f"{index}-p{protocol}-{container}-{fmt.replace('.', '_')}"
                    marker = str(tmp_path / f"marker-{name}")
                    hostile = payload(refused, tmp_path, marker)
                    if container == "dict":  # a plain pickle of a tensor would itself be refused
                        weight = torch.ones(2, 3) if fmt != "pkl" else [1.0, 2.0]
                        hostile = {"model": OrderedDict(weight=weight), "extra": hostile}
                    path = str(tmp_path / f"{name}.{fmt.split('.')[-1]}")
                    if fmt == "pkl":
                        with open(path, "wb") as file:
                            pickle.dump(hostile, file, protocol=protocol)
                    else:
                        torch.save(hostile, path, pickle_protocol=protocol)
                    files[path] = (refused, marker)
    return files


def run_driver(mode, files, tmp_path, *extra):
    results = str(tmp_path / f"results-{mode}.json")
    env = dict(os.environ, GLOG_v="3", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    completed = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "load_untrusted.py"), mode, results,
                                *extra, *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr
    with open(results) as file:
        return json.load(file)


def test_hostile_pickles_are_refused_before_they_run(tmp_path, digits_cifar):
    files = write_hostile_files(tmp_path)
    assert len(files) == 48

    # the payloads are live: the unrestricted loaders run every one of them
    run_driver("control", files, tmp_path)
    for path, (_, marker) in files.items():
        assert os.path.exists(marker), f"the payload of {path} did not run unrestricted"
        os.remove(marker)

    for mode, extra in (("conv", ()), ("pretrained", ("--data_url", digits_cifar))):
        results = run_driver(mode, files, tmp_path, *extra)
        for path, (refused, marker) in files.items():
            assert not os.path.exists(marker), f"{mode}: the payload of {path} ran"
            expected = f"error: refusing to load {refused} from {path}: a checkpoint may only hold tensors"
            assert results[path] == {"exit": 2, "stderr": [expected]}, (mode, path)
            assert not os.path.exists(path + ".ckpt")


def test_the_command_lines_end_with_the_refusal_line(tmp_path, digits_cifar):
    files = write_hostile_files(tmp_path)
    path, (refused, marker) = next(iter(files.items()))
    line = f"refusing to load {refused} from {path}: a checkpoint may only hold tensors"
    assert_one_line_error(run_script("conv_pt2ckpt.py", "--pth_file", path, "--ckpt_file", str(tmp_path / "o.ckpt")),
                          line)
    assert_one_line_error(run_script("train.py", "--config", os.path.join(ROOT, "src", "configs",
                                                                          "bit_tiny_cifar10_cpu.yaml"),
                                     "--data_url", digits_cifar, "--train_url", str(tmp_path / "out"),
                                     "--pretrained", path), line)
    assert not os.path.exists(marker) and not (tmp_path / "o.ckpt").exists()


def test_tensors_of_every_stored_kind_are_rebuilt_without_torch(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
    tensors = {
        "float32": base, "view": base[1:, ::2], "transposed": base.t(), "offset_row": base[2],
        "float16": base.half(), "bfloat16": base.bfloat16(), "float64": base.double(),
        "int64": torch.arange(5), "int32": torch.arange(5, dtype=torch.int32), "bool": base > 1,
        "uint8": torch.arange(4, dtype=torch.uint8), "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(base[:2]),
    }
    torch.save({"model": tensors, "epoch": 3, "names": ["a", "b"]}, tmp_path / "all.pth")
    loaded = read_torch_file(str(tmp_path / "all.pth"))
    assert loaded["epoch"] == 3 and loaded["names"] == ["a", "b"]
    for name, tensor in tensors.items():
        expected = (tensor.float() if name == "bfloat16" else tensor).detach().numpy()
        assert loaded["model"][name].dtype == expected.dtype, name
        np.testing.assert_array_equal(loaded["model"][name], expected, err_msg=name)


class OutOfBoundsView:
    """A tensor record whose view reaches past its storage (would read foreign memory if trusted)."""

    def __init__(self, tensor, offset):
        self.tensor, self.offset = tensor, offset

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.tensor.storage(), self.offset, (4,), (1,), False, OrderedDict())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_tensor_records_and_legacy_files_are_clear_errors(tmp_path):
    torch.save({"w": OutOfBoundsView(torch.zeros(6), offset=3)}, tmp_path / "past_end.pth")
    with pytest.raises(UserInputError, match="reaches past the end of its storage"):
        read_torch_file(str(tmp_path / "past_end.pth"))
    torch.save({"w": OutOfBoundsView(torch.zeros(6), offset=2)}, tmp_path / "inside.pth")
    np.testing.assert_array_equal(read_torch_file(str(tmp_path / "inside.pth"))["w"], np.zeros(4, np.float32))

    torch.save({"w": torch.zeros(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(UserInputError, match="legacy .* format.*re-save it"):
        read_torch_file(str(tmp_path / "legacy.pth"))
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(UserInputError, match="cannot read .* as a PyTorch checkpoint"):
        read_torch_file(str(tmp_path / "garbage.pth"))


def test_safetensors_files_read_like_the_same_pytorch_checkpoint(tmp_path):
    """float32, float16 and bfloat16 tensors (NumPy has no bfloat16: widened from its bytes); a damaged file is
    one error line."""
    from safetensors.torch import save_file

    from src.weights.published import read_published_weights

    generator = torch.Generator().manual_seed(0)
    state = {"blocks.0.attn.qkv.weight": torch.randn(6, 2, generator=generator),
             "pos_embed": torch.randn(1, 5, 2, generator=generator).to(torch.float16),
             "cls_token": torch.randn(1, 1, 2, generator=generator).to(torch.bfloat16),
             "rel_pos_index": torch.arange(9).reshape(3, 3)}
    save_file(state, str(tmp_path / "weights.safetensors"))
    torch.save(state, str(tmp_path / "weights.pth"))
    from_safetensors = read_published_weights(str(tmp_path / "weights.safetensors"))
    from_torch = read_published_weights(str(tmp_path / "weights.pth"))
    assert from_safetensors.keys() == from_torch.keys() == state.keys()
    for key, value in state.items():
        assert from_safetensors[key].dtype == np.float32
        np.testing.assert_array_equal(from_safetensors[key], value.float().numpy(), err_msg=key)
        np.testing.assert_array_equal(from_safetensors[key], from_torch[key], err_msg=key)
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes((tmp_path / "weights.safetensors").read_bytes()[:-20])
    result = run_script("conv_pt2ckpt.py", "--pth_file", str(damaged), "--ckpt_file", str(tmp_path / "out.ckpt"))
    assert_one_line_error(result, f"cannot read {damaged} as .safetensors")
    assert not (tmp_path / "out.ckpt").exists()
