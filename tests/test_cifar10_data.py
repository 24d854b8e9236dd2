import os

import numpy as np
import pytest
from conftest import TINY_CONFIG, random_images
from prepare_digits_cifar10 import write_cifar10_bin, write_cifar10_folder

from src.args import parse_args
from src.data import create_dataset
from src.data.cifar10 import RECORD_BYTES, load_cifar10, read_cifar10_bin
from src.errors import UserInputError


def test_records_round_trip_with_any_file_and_record_count(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    parts = [random_images(count, seed) for seed, count in enumerate((7, 13, 1))]
    for index, (images, labels) in enumerate(parts, start=1):
        write_cifar10_bin(str(folder / f"data_batch_{index}.bin"), images, labels)
    write_cifar10_bin(str(folder / "test_batch.bin"), *random_images(5, 9))
    assert os.path.getsize(folder / "data_batch_2.bin") == 13 * RECORD_BYTES

    images, labels = load_cifar10(str(tmp_path), training=True)  # the parent folder works too
    assert images.shape == (21, 32, 32, 3) and labels.shape == (21,)
    np.testing.assert_array_equal(images, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(labels, np.concatenate([p[1] for p in parts]))
    assert load_cifar10(str(folder), training=False)[0].shape == (5, 32, 32, 3)


def test_byte_layout_is_label_then_rgb_planes(tmp_path):
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1] = (10, 20, 30)  # row 0, column 1: R, G, B
    write_cifar10_bin(str(tmp_path / "data_batch_1.bin"), image, [7])
    raw = np.fromfile(tmp_path / "data_batch_1.bin", np.uint8)
    assert raw[0] == 7 and raw[1 + 1] == 10 and raw[1 + 1024 + 1] == 20 and raw[1 + 2048 + 1] == 30


def test_truncated_or_missing_files_are_clear_errors(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    write_cifar10_bin(str(path), *random_images(3))
    with open(path, "r+b") as f:
        f.truncate(3 * RECORD_BYTES - 100)
    with pytest.raises(UserInputError, match="not a whole number of 3073-byte"):
        read_cifar10_bin([str(path)])
    with pytest.raises(UserInputError, match="no CIFAR-10 binaries"):
        load_cifar10(str(tmp_path / "elsewhere"), training=True)
    with pytest.raises(UserInputError, match="no test_batch.bin"):
        load_cifar10(str(tmp_path), training=False)


@pytest.fixture()
def small_cifar(tmp_path):
    images, labels = random_images(40)
    write_cifar10_folder(str(tmp_path), (images, labels), random_images(10, 1), train_files=2)
    return str(tmp_path), images, labels


def test_eval_pipeline_normalises_and_crops(small_cifar):
    folder, _, _ = small_cifar
    args = parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--batch_size", "4", "--crop_ratio", "1.0"])
    test_images, test_labels = load_cifar10(folder, training=False)
    batches = list(create_dataset(args, training=False).create_tuple_iterator(output_numpy=True))
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.float32
    expected = (test_images.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(images, expected, atol=1e-5)
    np.testing.assert_array_equal(labels, test_labels)


def test_more_workers_than_cpus_run_on_the_cpus_there_are(small_cifar):
    # a published config's 16 workers on a smaller machine ended in MindSpore's ValueError
    folder, _, _ = small_cifar
    batches = {}
    for workers in (1, (os.cpu_count() or 1) + 3):
        args = parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--batch_size", "4",
                           "--num_parallel_workers", str(workers)])
        batches[workers] = list(create_dataset(args, training=False).create_tuple_iterator(output_numpy=True))
    one, many = batches.values()
    assert len(one) == len(many) == 3
    for (images, labels), (images_many, labels_many) in zip(one, many):
        np.testing.assert_array_equal(images, images_many)
        np.testing.assert_array_equal(labels, labels_many)


def test_training_with_mixup_gives_soft_targets(small_cifar):
    folder, _, _ = small_cifar
    args = parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--batch_size", "8", "--mix_up", "0.5",
                       "--rand_augment_num_layers", "2", "--rand_augment_magnitude", "20"])
    batches = list(create_dataset(args, training=True).create_tuple_iterator(output_numpy=True))
    assert len(batches) == 5
    for images, targets in batches:
        assert images.shape == (8, 3, 32, 32) and targets.shape == (8, 10) and targets.dtype == np.float32
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
        assert targets.min() >= 0.01 - 1e-6  # label smoothing 0.1 over 10 classes


def test_shards_partition_the_training_set(small_cifar):
    folder, _, labels = small_cifar
    args = parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--batch_size", "4", "--crop_ratio", "1.0"])
    seen = []
    for shard in range(2):
        for _, batch_labels in create_dataset(args, training=True, num_shards=2, shard_id=shard) \
                .create_tuple_iterator(output_numpy=True):
            seen.extend(batch_labels.tolist())
    assert len(seen) == 40
    assert sorted(seen) == sorted(labels.tolist())


def test_class_count_and_batch_checks(small_cifar):
    folder, _, _ = small_cifar
    with pytest.raises(UserInputError, match="num_classes is 5"):
        create_dataset(parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--num_classes", "5"]), True)
    with pytest.raises(UserInputError, match="batch_size 64 is larger"):
        create_dataset(parse_args(["--config", TINY_CONFIG, "--data_url", folder, "--batch_size", "64"]), True)
