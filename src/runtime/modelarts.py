"""ModelArts / OpenI: obs:// inputs are copied to the node's local disk once, outputs are copied back.

Huawei's `moxing` exists only in the ModelArts images; it is imported here, on this path alone. (The PyPI
package named moxing is an unrelated project.) Paths that are not object-store URLs (a mounted file
system) are used in place.
"""
import collections
import hashlib
import json
import os
import re
import socket
import time

from mindspore.train.callback import Callback

from src.errors import UserInputError, first_line

REMOTE_SCHEMES = ("obs://", "s3://")
# inputs a run may read; the rest of the config is local
INPUT_KEYS = ("data_url", "file_list", "pretrained", "resume", "tokenizer_pretrained", "teacher_pretrained")
RANK_FOLDER = re.compile(r"^ckpt(_best)?_(\d{4})$")


CacheEntry = collections.namedtuple("CacheEntry", "local ready failed lock")


def is_remote(path):
    return isinstance(path, str) and path.startswith(REMOTE_SCHEMES)


def import_moxing():
    try:
        import moxing
    except ImportError:
        raise UserInputError("run_modelarts needs the moxing module of the ModelArts / OpenI images (the PyPI "
                             "package named moxing is another project): run on a ModelArts image, or use local "
                             "paths and run_modelarts False") from None
    if not hasattr(getattr(moxing, "file", None), "copy_parallel"):
        raise UserInputError(f"the moxing module at {moxing.__file__} is not ModelArts' (it has no "
                             "file.copy_parallel); the PyPI package named moxing is another project")
    return moxing


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NodeCache:
    """Copies of obs:// inputs under `cache_dir/inputs`, made once per node.

    The first process of a node to create an input's lock file copies it and then writes a ready flag (or a
    failed flag with the reason); the node's other processes wait for either flag, at most `timeout` seconds.
    The copy's folder is named after the URL, so a later run on the same node reuses it.
    """

    def __init__(self, moxing, cache_dir, timeout, poll_interval=0.5):
        self.mox = moxing
        self.root = os.path.join(cache_dir, "inputs")
        self.timeout = timeout
        self.poll_interval = poll_interval

    def entry(self, url):
        """The local copy of `url` and its flag files."""
        folder = os.path.join(self.root, hashlib.sha1(url.encode()).hexdigest()[:12])
        return CacheEntry(os.path.join(folder, os.path.basename(url.rstrip("/")) or "input"),
                          *(os.path.join(folder, flag) for flag in (".ready", ".failed", ".lock")))

    def local_copy(self, url):
        entry = self.entry(url)
        os.makedirs(os.path.dirname(entry.local), exist_ok=True)
        if os.path.exists(entry.ready):
            return entry.local
        try:
            handle = os.open(entry.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self._wait_for(url, entry)
        with os.fdopen(handle, "w") as lock_file:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, lock_file)
        if os.path.exists(entry.failed):  # an earlier run's failure: this one tries again
            os.remove(entry.failed)
        try:
            if self.mox.file.is_directory(url):
                self.mox.file.copy_parallel(url, entry.local)
            elif self.mox.file.exists(url):
                self.mox.file.copy(url, entry.local)
            else:
                raise UserInputError(f"{url} does not exist")
        except Exception as err:
            reason = first_line(err)
            with open(entry.failed, "w") as flag:
                flag.write(reason)
            os.remove(entry.lock)
            raise UserInputError(f"copying {url} to {entry.local} failed: {reason}") from None
        open(entry.ready, "w").close()
        return entry.local

    def _wait_for(self, url, entry):
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(entry.ready):
            if self._failed_now(entry):
                with open(entry.failed) as flag:
                    raise UserInputError(f"copying {url} to {entry.local} failed in another process: {flag.read()}")
            holder = self._lock_holder(entry.lock)
            if holder is not None and holder.get("host") == socket.gethostname() and not _pid_alive(holder["pid"]):
                raise UserInputError(f"process {holder['pid']} died while copying {url} to {entry.local}: delete "
                                     f"{entry.lock} and start again")
            if time.monotonic() > deadline:
                raise UserInputError(f"waited {self.timeout} s for another process to copy {url} to {entry.local} "
                                     f"(lock {entry.lock}); raise cache_sync_timeout, or delete the lock if it is "
                                     "stale")
            time.sleep(self.poll_interval)
        return entry.local

    @staticmethod
    def _failed_now(entry):
        """A failed flag of this attempt, not one an earlier run left before the copier removes it."""
        try:
            failed_time = os.path.getmtime(entry.failed)
        except OSError:
            return False
        try:
            return failed_time >= os.path.getmtime(entry.lock)
        except OSError:  # the copier removed its lock after failing
            return True

    @staticmethod
    def _lock_holder(lock):
        try:
            with open(lock) as lock_file:
                return json.load(lock_file)
        except (OSError, ValueError):  # gone, or being written
            return None


def fetch_inputs(args, rank=0, log=print):
    """With run_modelarts, point the obs:// inputs of `args` at node-local copies and the outputs at
    `cache_dir/output`. Returns the obs:// train_url to upload to (None when outputs stay local)."""
    if not args.run_modelarts:
        return None
    mox = import_moxing()
    cache = NodeCache(mox, args.cache_dir, args.cache_sync_timeout)
    for key in INPUT_KEYS:
        url = getattr(args, key, None)
        if is_remote(url):
            setattr(args, key, cache.local_copy(url))
            log(f"{key}: {url} -> {getattr(args, key)}")
    if not is_remote(args.train_url):
        return None
    remote_train_url, args.train_url = args.train_url, os.path.join(args.cache_dir, "output")
    log(f"train_url: outputs in {args.train_url}, copied to {remote_train_url} after each epoch")
    remote_metrics = f"{remote_train_url.rstrip('/')}/metrics.jsonl"
    if args.resume == "auto" and rank == 0 and mox.file.exists(remote_metrics):
        # the resumed run's metrics.jsonl continues the one on OBS, which its uploads replace
        mox.file.copy(remote_metrics, os.path.join(args.train_url, "metrics.jsonl"))
    return remote_train_url


class UploadOutputs(Callback):
    """After each epoch (once the checkpoints are saved) and at the end, copy this rank's outputs to
    train_url on OBS: rank 0 copies the shared files and its own checkpoint folders, other ranks (with
    save_all_ranks) only theirs, so that no process copies a file another is writing."""

    def __init__(self, local_dir, remote_dir, rank):
        super().__init__()
        self.mox = import_moxing()
        self.local_dir = local_dir
        self.remote_dir = remote_dir.rstrip("/")
        self.rank = rank

    def owned(self, entry):
        match = RANK_FOLDER.match(entry)
        return int(match.group(2)) == self.rank if match else self.rank == 0

    def upload(self):
        for entry in sorted(os.listdir(self.local_dir)) if os.path.isdir(self.local_dir) else []:
            local = os.path.join(self.local_dir, entry)
            if entry.startswith(".") or not self.owned(entry):
                continue
            remote = f"{self.remote_dir}/{entry}"
            if os.path.isdir(local):
                self.mox.file.copy_parallel(local, remote)
            else:
                self.mox.file.copy(local, remote)

    def on_train_epoch_end(self, run_context):
        self.upload()

    def on_train_end(self, run_context):
        self.upload()
