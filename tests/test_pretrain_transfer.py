"""scripts/run_pretrain_transfer.sh end to end on a tiny real subset (scikit-learn's digits) with tiny epochs:
the JSON line, the curves PNG and the labeled file list; bad folders are one error line before any training.
The accuracy gap itself is the benchmark's job (README, "Does pretraining help?")."""
import json
import os
import shutil
import subprocess

import pytest
from conftest import ROOT, assert_one_line_error
from prepare_digit_folders import write_digit_folders

SCRIPT = os.path.join(ROOT, "scripts", "run_pretrain_transfer.sh")


def run_transfer(data, out, **env):
    variables = {**os.environ, "GLOG_v": "3", "LABELS_PER_CLASS": "4", "PRETRAIN_STEPS": "30",
                 "FINETUNE_EPOCHS": "2", "LINPROBE_EPOCHS": "2", "BATCH_SIZE": "8", **env}
    return subprocess.run(["bash", SCRIPT, str(data), str(out)], cwd=ROOT, env=variables, capture_output=True,
                          text=True, timeout=1200)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digit_folders")
    write_digit_folders(str(root), source="digits", val_per_class=3, train_per_class=12)
    return root


def test_the_transfer_script_reports_every_arm_and_draws_the_curves(digits, tmp_path):
    result = run_transfer(digits, tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(summary) == ["scratch", "mae", "scratch_linprobe", "mae_linprobe", "minutes"]
    assert all(0.0 <= summary[arm] <= 1.0 for arm in ("scratch", "mae", "scratch_linprobe", "mae_linprobe"))
    assert "MAE fine-tuning - scratch" in result.stdout
    assert "MAE pretraining on 120 images of" in result.stdout and ", 2 epochs ..." in result.stdout  # 30 steps
    with open(tmp_path / "out" / "finetune_curves.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "out" / "labeled.txt") as listed:
        lines = listed.read().split()
    assert len(lines) == 40 and all(len([line for line in lines if line.startswith(f"train/{digit}/")]) == 4
                                    for digit in range(10))
    for arm in ("mae", "scratch"):  # both arms trained on the listed images, the same number of steps
        with open(tmp_path / "out" / f"{arm}.log") as log:
            assert "5 steps per epoch" in log.read()
    with open(tmp_path / "out" / "mae.log") as log:
        assert "initialised anew" in log.read()  # the classifier of the MAE-initialised arm


def test_folder_problems_are_one_error_line_before_training(digits, tmp_path):
    no_val = tmp_path / "no_val"
    shutil.copytree(digits / "train", no_val / "train")
    assert_one_line_error(run_transfer(no_val, tmp_path / "o1"), "has no val/ folder")
    assert_one_line_error(run_transfer(digits, tmp_path / "o2", LABELS_PER_CLASS="20"),
                          "fewer than LABELS_PER_CLASS=20")
    extra = tmp_path / "extra_val"
    shutil.copytree(digits, extra)
    shutil.copytree(extra / "val" / "3", extra / "val" / "unknown")
    assert_one_line_error(run_transfer(extra, tmp_path / "o3"), "val/ has classes that train/ lacks: unknown")
    assert not (tmp_path / "o3" / "mae_pretrain").exists()
    # the environment's numbers: a ValueError / ZeroDivisionError traceback before
    assert_one_line_error(run_transfer(digits, tmp_path / "o4", LABELS_PER_CLASS="four"),
                          "LABELS_PER_CLASS must be a whole number >= 1, got 'four'")
    assert_one_line_error(run_transfer(digits, tmp_path / "o5", BATCH_SIZE="0"),
                          "BATCH_SIZE must be a whole number >= 1, got '0'")
    assert_one_line_error(run_transfer(digits, tmp_path / "o6", FINETUNE_EPOCHS="2.5"),
                          "FINETUNE_EPOCHS must be a whole number >= 1, got '2.5'")
    assert not (tmp_path / "o6").exists()
