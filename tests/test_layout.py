"""The shape of the code: folders import only downwards, the task name is looked up in one place, models
take only the config keys they declare (the others are named in one warning), and noise streams do not
depend on what was built before."""
import ast
import glob
import os
import re

import numpy as np
import pytest
from conftest import ROOT, TINY_CONFIG

from src.args import parse_args
from src.errors import UserInputError
from src.models import create_model, create_model_from_args, list_models, model_config_keys
from src.models.layers import ResumableUniform, seed_noise
from src.tasks import TASKS, create_task, unused_config_keys

CONFIGS = os.path.join(ROOT, "src", "configs")
ENTRY_SCRIPTS = ("train.py", "eval.py", "export.py", "predict.py", "visualize_mae.py", "conv_pt2ckpt.py")


def imported_folders(path):
    """The src/ folders (or top-level modules) a file imports from."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    modules += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return {module.split(".")[1] for module in modules if module.startswith("src.")}


def test_no_folder_imports_from_a_folder_that_imports_it_back():
    imports = {}
    for path in glob.glob(os.path.join(ROOT, "src", "**", "*.py"), recursive=True):
        parts = os.path.relpath(path, os.path.join(ROOT, "src")).split(os.sep)
        folder = parts[0] if len(parts) > 1 else parts[0][:-3]
        imports.setdefault(folder, set()).update(imported_folders(path) - {folder})
    cycles = [(a, b) for a in imports for b in imports[a] if a in imports.get(b, ())]
    assert not cycles
    assert imports["models"] <= {"errors", "ops", "runtime"} and imports["ops"] == set()


def test_the_task_name_is_looked_up_only_in_the_task_registry():
    for path in [os.path.join(ROOT, name) for name in ENTRY_SCRIPTS] + glob.glob(
            os.path.join(ROOT, "src", "**", "*.py"), recursive=True):
        text = open(path, encoding="utf-8").read()
        if os.path.relpath(path, ROOT) != os.path.join("src", "tasks", "__init__.py"):
            assert not re.search(r"args\.task\s*[!=]=", text), path
    for script in ENTRY_SCRIPTS:  # no entry script imports another
        assert not {"train", "eval", "export", "predict"} & {
            node.module for node in ast.walk(ast.parse(open(os.path.join(ROOT, script)).read()))
            if isinstance(node, ast.ImportFrom)}, script


def test_every_task_is_registered_and_checks_its_config():
    assert set(TASKS) == {"classification", "mae_pretrain", "beit_pretrain", "vqkd_train"}
    args = parse_args(["--config", os.path.join(CONFIGS, "beit_tiny_pretrain_cpu.yaml"), "--set", "CIFAR10"])
    with pytest.raises(UserInputError, match="reads unlabeled images: set ImageFolder"):
        create_task(args)
    with pytest.raises(UserInputError, match="unknown task 'mim'"):
        create_task(parse_args(["--config", TINY_CONFIG, "--task", "mim"]))


def test_models_take_only_the_keys_their_family_declares():
    assert model_config_keys("bit_m_r50x1") == {"num_classes", "layers", "width_factor"}
    assert "drop_path_rate" not in model_config_keys("mae_vit_base_patch16")
    assert "num_classes" not in model_config_keys("beit_base_patch16_224_8k_vocab")
    with pytest.raises(UserInputError, match="model 'bit_m_r50x1' does not take 'img_size'"):
        create_model("bit_m_r50x1", img_size=224)
    for name in list_models():  # every declared key maps to an argument the variant takes
        model_config_keys(name)


def test_keys_no_task_or_model_reads_are_named_and_shipped_configs_set_none():
    mae = os.path.join(CONFIGS, "mae_tiny_pretrain_cpu.yaml")
    args = parse_args(["--config", mae, "--drop_path_rate", "0.1", "--layers", "[1, 1, 1, 1]"])
    assert unused_config_keys(args, create_task(args)) == ["drop_path_rate", "layers"]
    args = parse_args(["--config", TINY_CONFIG, "--depth", "3", "--tokenizer", "dall_e_encoder"])
    assert unused_config_keys(args, create_task(args)) == ["depth", "tokenizer"]
    for config in glob.glob(os.path.join(CONFIGS, "*.yaml")):
        args = parse_args(["--config", config])
        assert unused_config_keys(args, create_task(args)) == [], config
    network = create_model_from_args(parse_args(["--config", mae, "--drop_path_rate", "0.1"]))
    assert not any(isinstance(cell, ResumableUniform) and "drop_path" in name
                   for name, cell in network.cells_and_names())


def streams(network):
    return {name: cell.stream for name, cell in network.cells_and_names() if isinstance(cell, ResumableUniform)}


def test_noise_streams_follow_the_seed_and_the_cell_not_the_build_order():
    tiny = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, drop_path_rate=0.1, num_classes=3)
    first = streams(create_model("beit_base_patch16_224", **tiny))
    create_model("mae_vit_base_patch16", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                 decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)  # built in between
    again = streams(create_model("beit_base_patch16_224", **tiny))
    assert first == again and len(first) == 2 and len(set(first.values())) == 2
    reseeded = streams(seed_noise(create_model("beit_base_patch16_224", **tiny), seed=1))
    assert set(reseeded) == set(first) and not set(reseeded.values()) & set(first.values())
    noise = ResumableUniform(stream=first["blocks.1.drop_path.noise"])
    assert np.ptp(noise((64,)).asnumpy()) > 0.5
