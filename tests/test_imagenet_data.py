"""ImageNet-layout pipeline on real photos, and its augmentations against timm's own."""
import os
import random
import re
import shutil

import mindspore.dataset.vision as vision
import numpy as np
import pytest
import torch
from mindspore.train.callback import RunContext
from PIL import Image
from sample_photos import bundled_photos, write_photo_imagenet
from timm.data import auto_augment as timm_aa
from timm.data import create_transform
from timm.data.random_erasing import RandomErasing as TimmRandomErasing

from src.args import parse_args
from src.data import create_dataset
from src.data.augment.auto_augment import (
    FILL,
    OPS,
    RAND_INCREASING_TRANSFORMS,
    AutoAugment,
    GeometryStyle,
    augmentation_from_string,
)
from src.data.augment.random_erasing import RandomErasing
from src.data.imagenet import ImageFileSource, scan_class_folders, scan_unlabeled, select_listed
from src.data.transforms import imagenet_train_transforms
from src.errors import UserInputError

N_SAMPLES = 20000


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("imagenet"))
    write_photo_imagenet(root, num_classes=3, train_per_class=5, val_per_class=2)
    return root


def imagenet_args(root, *extra):
    return parse_args(["--set", "ImageNet", "--data_url", root, "--num_classes", "3", "--image_size", "96",
                       "--batch_size", "4", "--interpolation", "bicubic", "--num_parallel_workers", "2", *extra])


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov distance."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    return np.abs(cdf_a - np.searchsorted(b, grid, side="right") / len(b)).max()


def ks_limit(n, m):
    return 1.95 * np.sqrt((n + m) / (n * m))  # alpha = 0.001


# ----- folders ----- #

def test_file_list_trains_on_a_labeled_subset_and_evaluates_all_of_val(imagenet, tmp_path):
    _, samples = scan_class_folders(os.path.join(imagenet, "train"))
    chosen = [samples[0], samples[6], samples[7], samples[12]]  # classes 0, 1, 1, 2
    listing = tmp_path / "labeled.txt"
    listing.write_text("".join(os.path.relpath(path, imagenet) + "\n" for path, _ in chosen))
    args = imagenet_args(imagenet, "--file_list", str(listing))
    labels = np.concatenate([batch[1] for batch in create_dataset(args, training=True)
                             .create_tuple_iterator(num_epochs=1, output_numpy=True)])
    assert sorted(labels.tolist()) == sorted(label for _, label in chosen)
    assert create_dataset(args, training=False).get_dataset_size() == 2  # 6 val images in batches of 4
    listing.write_text("train/no_such_class/x.JPEG\n")
    with pytest.raises(UserInputError, match="not images in the class folders"):
        create_dataset(args, training=True)


def test_class_folders_sorted_and_checked(imagenet, tmp_path):
    classes, samples = scan_class_folders(os.path.join(imagenet, "train"))
    assert classes == sorted(classes) and len(samples) == 15
    assert {label for _, label in samples} == {0, 1, 2}
    with pytest.raises(UserInputError, match="3 class folders but num_classes is 5"):
        create_dataset(imagenet_args(imagenet, "--num_classes", "5"), training=True)
    (tmp_path / "train" / "empty_class").mkdir(parents=True)
    with pytest.raises(UserInputError, match="no images"):
        scan_class_folders(str(tmp_path / "train"))
    with pytest.raises(UserInputError, match="image folder not found"):
        scan_class_folders(str(tmp_path / "missing"))


def test_empty_class_folder_keeps_its_index_with_a_warning(tmp_path):
    write_photo_imagenet(str(tmp_path), num_classes=2, train_per_class=2, val_per_class=1)
    (tmp_path / "train" / "n00000000a_empty").mkdir()
    messages = []
    classes, samples = scan_class_folders(str(tmp_path / "train"), log=messages.append)
    assert classes == ["n00000000", "n00000000a_empty", "n00000001"]
    assert sorted({label for _, label in samples}) == [0, 2]
    assert messages == [f"warning: class folders without images in {tmp_path / 'train'}: n00000000a_empty"]


def test_shards_partition_an_image_folder(imagenet):
    args = imagenet_args(imagenet, "--batch_size", "1")
    seen = [int(label[0]) for shard in range(3) for _, label in
            create_dataset(args, training=True, num_shards=3, shard_id=shard)
            .create_tuple_iterator(output_numpy=True, num_epochs=1)]
    assert sorted(seen) == sorted(label for _, label in scan_class_folders(os.path.join(imagenet, "train"))[1])


def test_unlabeled_images_from_a_folder_or_a_file_list(imagenet, tmp_path):
    train = os.path.join(imagenet, "train")
    assert len(scan_unlabeled(train)) == 15
    names = sorted(os.listdir(os.path.join(train, "n00000001")))[:2]
    file_list = tmp_path / "list.txt"
    file_list.write_text("".join(f"n00000001/{name}\n" for name in names))
    assert [path for path, _ in scan_unlabeled(train, str(file_list))] == \
        [os.path.join(train, "n00000001", name) for name in names]
    with pytest.raises(UserInputError, match="no images"):
        scan_unlabeled(str(tmp_path))
    # saved with a byte order mark and Windows line ends (Notepad): the first name was not found
    file_list.write_bytes(b"\xef\xbb\xbf" + "".join(f"n00000001/{name}\r\n" for name in names).encode())
    assert [path for path, _ in scan_unlabeled(train, str(file_list))] == \
        [os.path.join(train, "n00000001", name) for name in names]
    # an image given as the list: a UnicodeDecodeError traceback before
    with pytest.raises(UserInputError, match=r"file list .*\.JPEG is not UTF-8 text \(invalid start byte at byte 0\)"):
        scan_unlabeled(train, os.path.join(train, "n00000001", names[0]))


@pytest.mark.parametrize("escape", ["../n00000001/a.JPEG", "n00000001/../../val/a.JPEG", "/etc/hostname"])
def test_a_file_list_cannot_lead_out_of_the_data_folder(imagenet, tmp_path, escape):
    train = os.path.join(imagenet, "train")
    name = sorted(os.listdir(os.path.join(train, "n00000001")))[0]
    file_list = tmp_path / "list.txt"
    file_list.write_text(f"n00000001/{name}\n{escape}\n")
    with pytest.raises(UserInputError, match=re.escape(f"names {escape}, outside {train}:")):
        scan_unlabeled(train, str(file_list))
    with pytest.raises(UserInputError, match=re.escape(f"names {escape}, outside {imagenet}:")):
        select_listed(scan_class_folders(train)[1], imagenet, str(file_list))


def test_train_and_val_must_name_the_same_classes(imagenet, tmp_path):
    # the same count under other names: each split numbered its own folders, so val's labels meant other classes
    renamed = tmp_path / "renamed"
    shutil.copytree(imagenet, renamed)
    os.rename(renamed / "val" / "n00000002", renamed / "val" / "n00000009")
    for training in (True, False):
        with pytest.raises(UserInputError, match=re.escape(
                f"train/ and val/ of {renamed} hold different class folders (a label would name one class in "
                "training and another in evaluation): n00000002, n00000009")):
            create_dataset(imagenet_args(str(renamed)), training=training)
    shutil.rmtree(renamed / "train")  # evaluation alone reads val/ as it is
    assert sum(len(labels) for _, labels in create_dataset(imagenet_args(str(renamed)), training=False)
               .create_tuple_iterator(output_numpy=True, num_epochs=1)) == 6


def test_bad_files_are_skipped_with_a_warning_and_counted(imagenet, tmp_path):
    root = tmp_path / "data"
    write_photo_imagenet(str(root), num_classes=3, train_per_class=4, val_per_class=1)
    class_dir = root / "train" / "n00000000"
    (class_dir / "not_an_image.JPEG").write_bytes(b"plain text, not a JPEG")
    good = sorted(class_dir.glob("*.JPEG"))[0].read_bytes()
    (class_dir / "truncated.JPEG").write_bytes(good[:len(good) // 2])
    messages = []
    _, samples = scan_class_folders(str(root / "train"))
    source = ImageFileSource(samples, log=messages.append)
    read = [source[index] for index in range(len(source))]
    assert len(read) == 14 and len(source.skipped) == 2
    assert any("not_an_image.JPEG" in m for m in messages) and any("truncated.JPEG" in m for m in messages)
    # the whole pipeline runs through the bad files
    batches = list(create_dataset(imagenet_args(str(root), "--auto_augment", "rand-m9-mstd0.5-inc1",
                                                "--re_prob", "0.25"), training=True)
                   .create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert len(batches) == 14 // 4
    for images, labels in batches:
        assert images.shape == (4, 3, 96, 96) and images.dtype == np.float32 and labels.dtype == np.int32


def test_unreadable_images_are_left_out_of_evaluation_not_replaced(tmp_path):
    """Evaluation over a val/ folder with two bad files equals evaluation over the folder without them, and
    says how many it left out; a training epoch reports its substitutions."""
    import mindspore as ms

    from src.engine.callbacks import StepLogger
    from src.engine.evaluation import evaluate
    from src.engine.loop import CallbackParams
    from src.models import create_model

    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    write_photo_imagenet(str(clean), num_classes=3, train_per_class=4, val_per_class=3)
    shutil.copytree(clean, damaged)
    val_dir = damaged / "val" / "n00000001"
    (val_dir / "not_an_image.JPEG").write_bytes(b"plain text, not a JPEG")
    good = sorted(val_dir.glob("*.JPEG"))[0].read_bytes()
    (val_dir / "truncated.JPEG").write_bytes(good[:len(good) // 2])
    ms.set_context(mode=ms.GRAPH_MODE)
    network = create_model("bit_m_r50x1", layers=[1, 1, 1, 1], width_factor=0.5, num_classes=3)
    expected = evaluate(network, create_dataset(imagenet_args(str(clean), "--batch_size", "2"), training=False))
    dataset = create_dataset(imagenet_args(str(damaged), "--batch_size", "2"), training=False)
    got = evaluate(network, dataset)
    assert expected["num_samples"] == got["num_samples"] == 9 and (expected["left_out"], got["left_out"]) == (0, 2)
    assert {key: got[key] for key in ("top1", "top5")} == {key: expected[key] for key in ("top1", "top5")}
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert sorted(os.path.basename(path) for path in dataset.unreadable_images) == ["not_an_image.JPEG",
                                                                                     "truncated.JPEG"]
    lines = []
    logger = StepLogger(steps_per_epoch=1, log_interval=1, log=lines.append, unreadable_images={"a", "b"})
    context = RunContext(CallbackParams(cur_epoch_num=1, cur_step_num=1, net_outputs=None, steps_in_call=1))
    logger.on_train_epoch_begin(context)
    logger.on_train_epoch_end(context)
    assert lines[-1] == "epoch: 1 2 unreadable images so far, each replaced by the next readable one"


def test_eval_transform_matches_timm(imagenet):
    args = imagenet_args(imagenet, "--image_size", "224", "--mean", "[0.485, 0.456, 0.406]",
                         "--std", "[0.229, 0.224, 0.225]")
    ours = np.concatenate([b[0] for b in create_dataset(args, training=False)
                           .create_tuple_iterator(output_numpy=True, num_epochs=1)])
    reference_transform = create_transform(224, is_training=False, interpolation="bicubic", crop_pct=0.875)
    _, samples = scan_class_folders(os.path.join(imagenet, "val"))
    reference = np.stack([reference_transform(Image.open(path).convert("RGB")).numpy() for path, _ in samples])
    assert ours.shape == reference.shape == (6, 3, 224, 224)
    # same geometry; only the bicubic kernels (OpenCV vs PIL) differ
    assert np.abs(ours - reference).mean() < 0.05


# ----- RandAugment ----- #

def timm_draws(transform, count):
    """[(op name, argument)] that one of timm's own augmentation transforms applies to each of `count` images."""
    ops = transform.ops if hasattr(transform, "ops") else [op for sub in transform.policy for op in sub]
    draws = []
    for op in ops:
        def record(img, *args, name=op.name, **kwargs):
            draws[-1].append((name, args[0] if args else None))
            return img
        op.aug_fn = record
    random.seed(0)
    np.random.seed(0)
    image = Image.new("RGB", (4, 4))
    for _ in range(count):
        draws.append([])
        transform(image)
    return draws


def assert_same_draws(ours, reference, names):
    """Same distribution of op count per image, op frequencies and per-op argument distributions."""
    counts_ours = np.bincount([len(d) for d in ours], minlength=4) / len(ours)
    counts_ref = np.bincount([len(d) for d in reference], minlength=4) / len(reference)
    np.testing.assert_allclose(counts_ours, counts_ref, atol=0.02)
    flat_ours = [draw for image in ours for draw in image]
    flat_ref = [draw for image in reference for draw in image]
    for name in names:
        args_ours = [arg for op, arg in flat_ours if op == name]
        args_ref = [arg for op, arg in flat_ref if op == name]
        assert abs(len(args_ours) / len(flat_ours) - len(args_ref) / len(flat_ref)) < 0.01, name
        if args_ref and args_ref[0] is not None:  # the argument distribution: magnitude noise, scaling, sign
            assert ks_statistic(args_ours, args_ref) < ks_limit(len(args_ours), len(args_ref)), name


def test_rand_augment_draws_match_timm():
    policy = "rand-m9-mstd0.5-inc1"
    ours_aug = augmentation_from_string(policy, seed=0)
    assert ours_aug.transforms == RAND_INCREASING_TRANSFORMS and ours_aug.magnitude == 9
    ours = [ours_aug.sample() for _ in range(N_SAMPLES)]
    reference = timm_draws(timm_aa.rand_augment_transform(policy, {"img_mean": FILL}), N_SAMPLES)
    np.testing.assert_allclose(np.bincount([len(d) for d in ours]) / N_SAMPLES, [0.25, 0.5, 0.25], atol=0.02)
    assert_same_draws(ours, reference, RAND_INCREASING_TRANSFORMS)


@pytest.mark.parametrize("policy", ["original", "v0", "v0-mstd0.5"])
def test_auto_augment_policies_match_timm(policy):
    ours_aug = augmentation_from_string(policy, seed=0)
    assert isinstance(ours_aug, AutoAugment) and len(ours_aug.policy) == 25
    ours = [ours_aug.sample() for _ in range(N_SAMPLES)]
    reference = timm_draws(timm_aa.auto_augment_transform(policy, {"img_mean": FILL}), N_SAMPLES)
    assert_same_draws(ours, reference, {name for sub in ours_aug.policy for name, _, _ in sub})


def test_augmentation_policy_strings():
    aug = augmentation_from_string("rand-m7-n3-p0.8-mstd1000")
    assert (aug.magnitude, aug.num_layers, aug.prob, aug.magnitude_std) == (7, 3, 0.8, float("inf"))
    assert "PosterizeIncreasing" not in aug.transforms
    for bad in ("augmix-m5", "rand-x3", "rand-m9-q1", "v0-m3"):
        with pytest.raises(UserInputError, match="auto_augment"):
            augmentation_from_string(bad)


def test_pipeline_uses_timms_augmentation_hyperparameters(imagenet):
    """create_transform fills geometric ops with the mean colour and uses the configured interpolation."""
    args = imagenet_args(imagenet, "--auto_augment", "rand-m9-mstd0.5-inc1")
    augmentation = next(op for op in imagenet_train_transforms(args)[-1].ops if hasattr(op, "sample"))
    reference = create_transform(96, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic")
    timm_op = next(t for t in reference.transforms if hasattr(t, "ops")).ops[0]
    assert augmentation.style.fill == timm_op.kwargs["fillcolor"]
    assert augmentation.style.resample == timm_op.kwargs["resample"] == Image.BICUBIC


def test_the_python_stage_equals_its_ops_in_turn_with_mindspores_normalize(imagenet):
    """RandAugment, normalisation (here MindSpore's Normalize + HWC2CHW) and erasing, as one map operation."""
    args = imagenet_args(imagenet, "--auto_augment", "rand-m9-mstd0.5-inc1", "--re_prob", "0.5")
    stage = imagenet_train_transforms(args, seed=3)[-1]
    augmentation, _, erasing = imagenet_train_transforms(args, seed=3)[-1].ops
    normalize = [vision.Normalize(mean=[255 * m for m in args.mean], std=[255 * s for s in args.std]),
                 vision.HWC2CHW()]
    for photo in bundled_photos()[:6]:
        crop = np.ascontiguousarray(photo[:96, :128])
        np.testing.assert_allclose(stage(crop), erasing(normalize[1](normalize[0](augmentation(crop)))),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, arg", [
    ("AutoContrast", None), ("Equalize", None), ("Invert", None), ("Rotate", 17.0), ("PosterizeIncreasing", 2),
    ("PosterizeOriginal", 5), ("SolarizeIncreasing", 100), ("SolarizeAdd", 60), ("ColorIncreasing", 1.6),
    ("ContrastIncreasing", 0.4), ("BrightnessIncreasing", 1.5), ("SharpnessIncreasing", 0.3), ("ShearX", 0.2),
    ("ShearY", -0.25), ("TranslateXRel", 0.3), ("TranslateYRel", -0.2)])
@pytest.mark.parametrize("resample", [Image.BILINEAR, Image.BICUBIC])
def test_each_op_matches_timms_op(name, arg, resample):
    photo = np.ascontiguousarray(bundled_photos()[0][100:260, 200:400])
    style = GeometryStyle(fill=(124, 116, 104), resample=resample)
    ours = np.asarray(OPS[name](photo, arg, np.random.default_rng(0), style))
    args = () if arg is None else (arg,)
    reference = np.asarray(timm_aa.NAME_TO_OP[name](Image.fromarray(photo), *args, fillcolor=(124, 116, 104),
                                                    resample=resample))
    np.testing.assert_array_equal(ours, reference)


# ----- random erasing ----- #

def test_random_erasing_matches_timm_statistics():
    ours_op = RandomErasing(prob=0.25, mode="pixel", max_count=2, seed=0)
    reference_op = TimmRandomErasing(probability=0.25, mode="pixel", max_count=2, device="cpu")
    random.seed(0)
    torch.manual_seed(0)
    count = 4000
    ours = [ours_op(np.zeros((3, 32, 48), np.float32)) for _ in range(count)]
    reference = [reference_op(torch.zeros(3, 32, 48)).numpy() for _ in range(count)]
    area_ours = [float((image != 0).any(0).mean()) for image in ours]
    area_ref = [float((image != 0).any(0).mean()) for image in reference]
    assert abs(np.mean(np.array(area_ours) > 0) - np.mean(np.array(area_ref) > 0)) < 0.03
    assert ks_statistic(area_ours, area_ref) < ks_limit(count, count)
    noise = np.concatenate([image[image != 0] for image in ours])
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02  # per-pixel N(0, 1)


def test_train_py_runs_on_an_imagenet_folder_with_the_seed_augmentation(imagenet, tmp_path):
    from conftest import TINY_CONFIG, run_script

    result = run_script("train.py", "--config", TINY_CONFIG, "--set", "ImageNet", "--data_url", imagenet,
                        "--train_url", str(tmp_path), "--num_classes", "3", "--image_size", "64", "--batch_size", "4",
                        "--epochs", "2", "--interpolation", "bicubic", "--auto_augment", "rand-m9-mstd0.5-inc1",
                        "--re_prob", "0.25", "--mix_up", "0.8", "--cutmix", "1.0", "--log_interval", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len([line for line in result.stdout.splitlines() if " loss is " in line]) == 2 * (15 // 4)
    assert "epoch: 0002 acc: " in result.stdout  # evaluated on val/
