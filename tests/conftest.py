import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

TINY_CONFIG = os.path.join(ROOT, "src", "configs", "bit_tiny_cifar10_cpu.yaml")


@pytest.fixture(scope="session")
def digits_cifar(tmp_path_factory):
    """scikit-learn's real digits written in the CIFAR-10 binary layout (1437 train / 360 test)."""
    from prepare_digits_cifar10 import digits_as_cifar, write_cifar10_folder

    folder = tmp_path_factory.mktemp("digits") / "cifar-10-batches-bin"
    write_cifar10_folder(str(folder), *digits_as_cifar())
    return str(folder)


@pytest.fixture(scope="session")
def small_digits(tmp_path_factory):
    """128 training digits (4 steps of a global batch of 32) and 63 test digits (odd: two ranks cannot split
    them evenly), in the CIFAR-10 layout."""
    from prepare_digits_cifar10 import digits_as_cifar, write_cifar10_folder

    (train_x, train_y), (test_x, test_y) = digits_as_cifar()
    folder = tmp_path_factory.mktemp("small") / "cifar-10-batches-bin"
    write_cifar10_folder(str(folder), (train_x[:128], train_y[:128]), (test_x[:63], test_y[:63]))
    return str(folder)


def switch_fused_kernels_off(request):
    """The fused CPU kernels off for the cells built from now on, until the test ends."""
    from src.ops.cpu_kernels import use_fused_cpu_kernels

    previous = use_fused_cpu_kernels(False)
    request.addfinalizer(lambda: use_fused_cpu_kernels(previous))


def run_script(*args, timeout=900):
    """Run an entry script in a fresh process; returns CompletedProcess with text output."""
    env = dict(os.environ, GLOG_v="3", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


PROGRESS_LINE = re.compile(r"^[a-z ]+: \d+/\d+ \(\d+%\), elapsed [\d:]+, ETA [\d:?]+$")  # src/runtime/progress.py


def assert_one_line_error(result, *needles):
    """Non-zero exit, a single `error:` line on stderr naming the problem (after any progress lines), no
    traceback."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "WARNING" not in line and not PROGRESS_LINE.match(line)]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def random_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count)
