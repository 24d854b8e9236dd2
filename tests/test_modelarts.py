"""The ModelArts / OpenI path: obs:// inputs copied once per node, outputs copied back, with a fake moxing
(tests/fake_moxing) that maps obs:// to a local folder."""
import glob
import json
import multiprocessing
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, TINY_CONFIG, assert_one_line_error, run_script

from src.errors import UserInputError

FAKE_MOXING = os.path.join(ROOT, "tests", "fake_moxing")


@pytest.fixture
def fake_obs(tmp_path, monkeypatch):
    """An OBS bucket as a local folder, and the fake moxing importable (here and in child processes)."""
    root = tmp_path / "obs"
    root.mkdir()
    monkeypatch.setenv("FAKE_OBS_ROOT", str(root))
    monkeypatch.setenv("PYTHONPATH", FAKE_MOXING + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.syspath_prepend(FAKE_MOXING)
    return root


def copies(obs_root):
    log = obs_root / "copies.log"
    return log.read_text().splitlines() if log.exists() else []


def node_cache(cache_dir, timeout=60):
    import moxing

    from src.runtime.modelarts import NodeCache

    return NodeCache(moxing, str(cache_dir), timeout, poll_interval=0.05)


def test_without_the_modelarts_moxing_the_error_says_so(digits_cifar, tmp_path):
    result = run_script("train.py", "--config", TINY_CONFIG, "--data_url", digits_cifar, "--train_url",
                        str(tmp_path), "--run_modelarts", "True")
    assert_one_line_error(result, "run_modelarts needs the moxing module of the ModelArts")
    assert not os.listdir(tmp_path)


def test_train_reads_obs_data_through_the_node_cache_and_writes_outputs_back(fake_obs, digits_cifar, tmp_path):
    subprocess.run(["cp", "-r", digits_cifar, str(fake_obs / "digits")], check=True)
    cache = tmp_path / "cache"
    result = run_script("train.py", "--config", TINY_CONFIG, "--run_modelarts", "True", "--cache_dir", str(cache),
                        "--data_url", "obs://digits", "--train_url", "obs://jobs/run1", "--epochs", "2",
                        "--batch_size", "64", "--keep_checkpoint_max", "1", "--log_interval", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    local_data = glob.glob(str(cache / "inputs" / "*" / "digits"))
    assert len(local_data) == 1 and sorted(os.listdir(local_data[0])) == sorted(os.listdir(digits_cifar))
    assert f"data_url: obs://digits -> {local_data[0]}" in result.stdout
    steps = 1437 // 64
    # what the run keeps locally (the latest checkpoint) and more: each epoch's upload stays on OBS
    assert sorted(os.listdir(cache / "output" / "ckpt_0000")) == [f"bit_m_r50x1_0000-2_{steps}.ckpt"]
    assert sorted(os.listdir(fake_obs / "jobs" / "run1" / "ckpt_0000")) == [
        f"bit_m_r50x1_0000-1_{steps}.ckpt", f"bit_m_r50x1_0000-2_{steps}.ckpt"]
    assert len(os.listdir(fake_obs / "jobs" / "run1" / "ckpt_best_0000")) >= 1
    data_copies = [line for line in copies(fake_obs) if line.startswith("obs://digits ")]
    assert len(data_copies) == 1

    # a second run on the node reuses the copy, and resumes from a checkpoint on OBS
    result = run_script("train.py", "--config", TINY_CONFIG, "--run_modelarts", "True", "--cache_dir", str(cache),
                        "--data_url", "obs://digits", "--train_url", "obs://jobs/run1", "--epochs", "3",
                        "--batch_size", "64", "--resume", f"obs://jobs/run1/ckpt_0000/bit_m_r50x1_0000-2_{steps}.ckpt")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resumed from" in result.stdout and "at epoch 2" in result.stdout
    assert len([line for line in copies(fake_obs) if line.startswith("obs://digits ")]) == 1
    assert f"bit_m_r50x1_0000-3_{steps}.ckpt" in os.listdir(fake_obs / "jobs" / "run1" / "ckpt_0000")

    # a relaunch on another node (an empty cache) with --resume auto continues from the newest checkpoint on OBS,
    # passing over an unfinished one, and its metrics.jsonl continues the one there
    (fake_obs / "jobs" / "run1" / "ckpt_0000" / f"bit_m_r50x1_0000-3_{steps + 1}.ckpt").write_bytes(b"cut short")
    result = run_script("train.py", "--config", TINY_CONFIG, "--run_modelarts", "True", "--cache_dir",
                        str(tmp_path / "other_node"), "--data_url", "obs://digits", "--train_url", "obs://jobs/run1",
                        "--epochs", "4", "--batch_size", "64", "--resume", "auto", "--log_interval", "100")
    assert result.returncode == 0, result.stdout + result.stderr
    newest = tmp_path / "other_node" / "resume_0" / f"bit_m_r50x1_0000-3_{steps}.ckpt"
    assert f"resume auto: from {newest}" in result.stdout and "warning: resume auto: passing over" in result.stdout
    with open(fake_obs / "jobs" / "run1" / "metrics.jsonl") as metrics:
        epochs = [json.loads(line)["epoch"] for line in metrics if '"loss"' in line]
    assert epochs == [1, 2, 3, 4]


def _copy_in_process(cache_dir, url, queue):
    try:
        queue.put(node_cache(cache_dir).local_copy(url))
    except UserInputError as err:
        queue.put(f"error: {err}")


def test_processes_of_a_node_copy_an_input_once_and_share_it(fake_obs, tmp_path, monkeypatch):
    (fake_obs / "data" / "train").mkdir(parents=True)
    (fake_obs / "data" / "train" / "a.txt").write_text("a")
    monkeypatch.setenv("FAKE_OBS_DELAY", "1")
    queue = multiprocessing.get_context("spawn").Queue()
    workers = [multiprocessing.get_context("spawn").Process(target=_copy_in_process,
                                                           args=(tmp_path / "cache", "obs://data", queue))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    results = [queue.get(timeout=5) for _ in workers]
    assert len(set(results)) == 1 and not results[0].startswith("error"), results
    assert open(os.path.join(results[0], "train", "a.txt")).read() == "a"
    assert copies(fake_obs) == [f"obs://data {results[0]}"]


def hold_lock(entry, pid):
    os.makedirs(os.path.dirname(entry.lock), exist_ok=True)
    with open(entry.lock, "w") as lock:
        lock.write('{"pid": %d, "host": "%s"}' % (pid, socket.gethostname()))


def test_a_failed_copy_is_reported_to_the_waiting_processes_and_retried_by_the_next_run(fake_obs, tmp_path):
    cache = node_cache(tmp_path / "cache")
    entry = cache.entry("obs://missing")
    with pytest.raises(UserInputError, match="obs://missing does not exist"):
        cache.local_copy("obs://missing")
    assert os.path.exists(entry.failed) and not os.path.exists(entry.lock)
    # a process that lost the race reads the failure instead of waiting for the timeout
    with pytest.raises(UserInputError, match="failed in another process: obs://missing does not exist"):
        cache._wait_for("obs://missing", entry)
    # a failure older than the current copier's lock is an earlier run's: wait for this one
    os.utime(entry.failed, (0, 0))
    hold_lock(entry, os.getpid())
    with pytest.raises(UserInputError, match="waited"):
        node_cache(tmp_path / "cache", timeout=0.3)._wait_for("obs://missing", entry)
    os.remove(entry.lock)
    # once the input exists, the next run copies it
    (fake_obs / "missing").write_text("here now")
    assert open(cache.local_copy("obs://missing")).read() == "here now"
    assert not os.path.exists(entry.failed)


def test_waiting_on_a_stuck_or_dead_copier_ends_with_a_clear_error(fake_obs, tmp_path):
    cache = node_cache(tmp_path / "cache", timeout=0.5)
    hold_lock(cache.entry("obs://data"), os.getpid())  # alive, never finishes
    with pytest.raises(UserInputError, match=r"waited 0.5 s for another process to copy obs://data .*"
                                             r"cache_sync_timeout"):
        cache.local_copy("obs://data")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    hold_lock(cache.entry("obs://data"), dead)
    with pytest.raises(UserInputError, match=rf"process {dead} died while copying obs://data"):
        cache.local_copy("obs://data")


def test_each_rank_uploads_only_what_it_owns(fake_obs, tmp_path):
    from src.runtime.modelarts import UploadOutputs

    local = tmp_path / "output"
    for folder in ("ckpt_0000", "ckpt_best_0000", "ckpt_0001", "ckpt_best_0001", "log"):
        (local / folder).mkdir(parents=True)
        (local / folder / "x.ckpt").write_text(folder)
    (local / "metrics.jsonl").write_text("{}")
    UploadOutputs(str(local), "obs://out/", rank=1).upload()
    assert sorted(os.listdir(fake_obs / "out")) == ["ckpt_0001", "ckpt_best_0001"]
    UploadOutputs(str(local), "obs://out", rank=0).upload()
    assert sorted(os.listdir(fake_obs / "out")) == ["ckpt_0000", "ckpt_0001", "ckpt_best_0000", "ckpt_best_0001",
                                                    "log", "metrics.jsonl"]
    assert (fake_obs / "out" / "ckpt_best_0000" / "x.ckpt").read_text() == "ckpt_best_0000"
