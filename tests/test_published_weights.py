"""Published weights by name: the table, downloads from a stand-in hub and file host on 127.0.0.1 (resumed,
checked, cached), conversion into the weights cache, and --pretrained NAME in the entry scripts."""
import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch
from conftest import ROOT, assert_one_line_error, run_script
from PIL import Image
from safetensors.numpy import save as safetensors_bytes
from sample_photos import bundled_photos
from test_beit import TINY, logits, ours, timm_beit
from test_bit_model import timm_to_npz
from timm.models.resnetv2 import _create_resnetv2_bit
from weights_server import WeightsServer

from src.args import DEFAULTS
from src.models import create_model, list_models
from src.weights.checkpoint import load_checkpoint
from src.weights.loading import load_weights
from src.weights.pretrained import pretrained_weights
from src.weights.zoo import PUBLISHED, PublishedWeights

# the scripts run with test entries added to the table, and huggingface_hub's 10 MB read chunks made small so that
# a dropped connection leaves a part of these small files to resume from
PRELUDE = ("import json, os, runpy, sys\n"
           "from huggingface_hub import constants\n"
           "constants.DOWNLOAD_CHUNK_SIZE = 4096\n"
           "from src.weights.zoo import PUBLISHED, PublishedWeights\n"
           "for name, entry in json.loads(os.environ['TEST_PUBLISHED']).items():\n"
           "    PUBLISHED[name] = PublishedWeights(cited='tests', **entry)\n"
           "sys.argv = sys.argv[1:]\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")
BEIT_SIZES = dict(TINY, num_classes=1000)
BEIT_SETTINGS = {"arch": "beit_base_patch16_224", "num_classes": 1000, "image_size": 32, "patch_size": 8,
                 "embed_dim": 32, "depth": 2, "num_heads": 4, "init_values": 0.1, "mean": [0.5, 0.5, 0.5],
                 "std": [0.5, 0.5, 0.5], "crop_ratio": 0.9, "interpolation": "bicubic"}
BIT_SETTINGS = {"arch": "bit_m_r50x1", "num_classes": 10, "layers": [1, 1, 1, 1], "width_factor": 1}


def run_with_entries(*args):
    return run_script("-c", PRELUDE, *args)


@pytest.fixture(scope="module")
def beit_reference():
    return timm_beit(**BEIT_SIZES, use_abs_pos_emb=False, use_rel_pos_bias=True)


@pytest.fixture(scope="module")
def bit_npz():
    torch.manual_seed(0)
    model = _create_resnetv2_bit("resnetv2_50x1_bit", num_classes=10, layers=[1, 1, 1, 1], width_factor=1)
    buffer = io.BytesIO()
    np.savez(buffer, **timm_to_npz(model))
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path):
    paths = []
    for index, photo in enumerate(bundled_photos()[:2]):
        paths.append(str(tmp_path / f"photo{index}.jpg"))
        Image.fromarray(photo).save(paths[-1])
    return paths


@pytest.fixture
def hosts(monkeypatch, tmp_path, beit_reference, bit_npz):
    """The stand-in server with a tiny BEiT on the 'hub' and a tiny BiT .npz at a 'direct URL', the test entries
    naming them, and empty caches."""
    server = WeightsServer()
    state = {key: value.numpy() for key, value in beit_reference.state_dict().items()}
    server.add_hub_file("timm/tiny_beit.test", "model.safetensors", safetensors_bytes(state))
    bit_url = server.add_file("/bit_models/BiT-tiny.npz", bit_npz)
    entries = {
        "tiny_beit_in1k": {"source": "hf-hub:timm/tiny_beit.test", "settings": BEIT_SETTINGS},
        "tiny_bit": {"source": bit_url, "filename": "BiT-tiny.npz", "settings": BIT_SETTINGS,
                     "sha256": hashlib.sha256(bit_npz).hexdigest()[:8]},
        "tiny_bit_tampered": {"source": bit_url, "filename": "BiT-tiny.npz", "settings": BIT_SETTINGS,
                              "sha256": "00000000"},
        "tiny_bit_gone": {"source": server.url + "/bit_models/missing.npz", "filename": "missing.npz",
                          "settings": BIT_SETTINGS},
    }
    monkeypatch.setenv("TEST_PUBLISHED", json.dumps(entries))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("MS_VISION_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.close()


def converted(tmp_path, name):
    found = [entry.name for entry in os.scandir(tmp_path / "weights") if entry.name.startswith(f"{name}-")
             and entry.name.endswith(".ckpt")]
    assert len(found) == 1, found
    return str(tmp_path / "weights" / found[0])


def test_every_name_maps_to_a_registered_architecture_and_cites_its_source():
    assert {"bit_m_r101x3", "beit_base_patch16_224_pt22k_ft22k", "beitv2_large_patch16_224_pt1k_ft22k_in1k",
            "mae_pretrain_vit_base", "mae_visualize_vit_base", "dall_e_encoder",
            "vqkd_encoder_base_decoder_3x768x12_clip"} <= set(PUBLISHED)
    for name, entry in PUBLISHED.items():
        assert entry.arch in list_models(), name
        assert set(entry.settings) <= set(DEFAULTS), name
        assert entry.cited and (entry.hub_repo or entry.source.startswith("https://")), name
        assert entry.filename and "/" not in entry.filename, name
    result = run_script("conv_pt2ckpt.py", "--list_pretrained")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert listed == sorted(PUBLISHED)
    result = run_script("predict.py", "--list_pretrained")
    assert result.returncode == 0 and [line.split()[0] for line in result.stdout.splitlines()[1:]] == listed


def test_a_hub_name_downloads_resumes_converts_once_and_predicts_offline(hosts, tmp_path, beit_reference, photos,
                                                                        monkeypatch):
    """predict.py --pretrained NAME with no config: the hub file comes through huggingface_hub (its connection
    dropped half-way once, then resumed with a Range request), is converted into the weights cache with the
    model's logits equal to timm's, and the second run needs no network at all."""
    hosts.drop_once.add("/timm/tiny_beit.test/resolve/main/model.safetensors")
    first = run_with_entries("predict.py", "--pretrained", "tiny_beit_in1k", *photos, "--topk", "3")
    assert first.returncode == 0, first.stderr
    gets = hosts.gets("tiny_beit.test")
    assert len(gets) == 2 and gets[0][2] is None and gets[1][2].startswith("bytes="), gets
    assert gets[1][2] != "bytes=0-"

    network = ours(**BEIT_SIZES, use_abs_pos_emb=False, use_rel_pos_bias=True)
    ckpt = converted(tmp_path, "tiny_beit_in1k")
    load_weights(network, load_checkpoint(ckpt), ckpt)
    images = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = beit_reference(torch.from_numpy(images)).detach().numpy()
    assert np.abs(logits(network, images) - expected).max() <= 1e-4

    with open(os.path.join(ROOT, "src", "data", "info", "imagenet1k_classes.txt"), encoding="utf-8") as f:
        imagenet = [line.rstrip("\n").split("\t")[1] for line in f]
    lines = first.stdout.strip().splitlines()
    results = json.loads(lines[-1])
    assert [line.split(": ")[0] for line in lines[-3:-1]] == photos
    for line, result in zip(lines[-3:-1], results):
        assert len(result["predictions"]) == 3
        for prediction in result["predictions"]:
            assert prediction["name"] == imagenet[prediction["label"]]
            assert f"{prediction['name']} ({prediction['label']}) {prediction['score']:.4f}" in line

    requests = len(hosts.requests)
    hosts.close()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = run_with_entries("predict.py", "--pretrained", "tiny_beit_in1k", *photos, "--topk", "3")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == results and len(hosts.requests) == requests


def test_a_url_name_resumes_a_part_checks_its_sha256_and_converts(hosts, tmp_path, bit_npz, monkeypatch):
    """A download left half-done by an earlier process continues from its .part; conv_pt2ckpt.py and
    --pretrained convert the same weights."""
    downloads = tmp_path / "weights" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "BiT-tiny.npz.part").write_bytes(bit_npz[:1000])
    out = str(tmp_path / "tiny_bit.ckpt")
    result = run_with_entries("conv_pt2ckpt.py", "--pth_file", "tiny_bit", "--ckpt_file", out)
    assert result.returncode == 0, result.stderr
    assert hosts.gets("BiT-tiny.npz") == [("GET", "/bit_models/BiT-tiny.npz", "bytes=1000-")]
    assert (downloads / "BiT-tiny.npz").read_bytes() == bit_npz and not (downloads / "BiT-tiny.npz.part").exists()
    written = load_checkpoint(out)
    assert written["head.conv.weight"].shape[0] == 10

    network = create_model("bit_m_r50x1", num_classes=10, layers=[1, 1, 1, 1], width_factor=1)
    entry = json.loads(os.environ["TEST_PUBLISHED"])["tiny_bit"]
    monkeypatch.setitem(PUBLISHED, "tiny_bit", PublishedWeights(cited="tests", **entry))
    weights = pretrained_weights(network, "tiny_bit")  # converted from the download already cached
    assert len(hosts.gets("BiT-tiny.npz")) == 1
    for name, value in written.items():
        np.testing.assert_array_equal(np.asarray(weights[name]), value.asnumpy(), err_msg=name)


def test_bad_downloads_are_one_line_errors_that_leave_no_cache_entry(hosts, tmp_path, photos, monkeypatch):
    out = str(tmp_path / "x.ckpt")
    tampered = run_with_entries("conv_pt2ckpt.py", "--pth_file", "tiny_bit_tampered", "--ckpt_file", out)
    assert_one_line_error(tampered, "checksum mismatch", "BiT-tiny.npz", "00000000")
    leftovers = [name for name in os.listdir(tmp_path / "weights" / "downloads") if not name.endswith(".lock")]
    assert leftovers == [] and not os.path.exists(out)
    gone = run_with_entries("eval.py", "--pretrained", "tiny_bit_gone")
    assert_one_line_error(gone, "cannot download", "missing.npz", "404")
    typo = run_with_entries("eval.py", "--pretrained", "tiny_bit_gnoe")
    assert_one_line_error(typo, "neither a file nor a published name", "did you mean tiny_bit_gone")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = run_with_entries("predict.py", "--pretrained", "tiny_beit_in1k", photos[0])
    assert_one_line_error(offline, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    offline = run_with_entries("conv_pt2ckpt.py", "--pth_file", "tiny_bit", "--ckpt_file", out)
    assert_one_line_error(offline, "not in the cache", "HF_HUB_OFFLINE")
    assert not [entry for entry in os.listdir(tmp_path / "weights") if entry.endswith(".ckpt")]
