import os
import shutil
import time

SCHEME = "obs://"


def _local(url):
    if url.startswith(SCHEME):
        return os.path.join(os.environ["FAKE_OBS_ROOT"], url[len(SCHEME):])
    return url


def _record(src, dst):
    time.sleep(float(os.environ.get("FAKE_OBS_DELAY", "0")))
    with open(os.path.join(os.environ["FAKE_OBS_ROOT"], "copies.log"), "a") as log:
        log.write(f"{src} {dst}\n")


def exists(url):
    return os.path.exists(_local(url))


def is_directory(url):
    return os.path.isdir(_local(url))


def copy(src_url, dst_url):
    if not os.path.isfile(_local(src_url)):
        raise OSError(f"no such file: {src_url}")
    _record(src_url, dst_url)
    os.makedirs(os.path.dirname(_local(dst_url)) or ".", exist_ok=True)
    shutil.copyfile(_local(src_url), _local(dst_url))


def copy_parallel(src_url, dst_url):
    if not os.path.isdir(_local(src_url)):
        raise OSError(f"no such folder: {src_url}")
    _record(src_url, dst_url)
    shutil.copytree(_local(src_url), _local(dst_url), dirs_exist_ok=True)


def list_directory(url):
    if not os.path.isdir(_local(url)):
        raise OSError(f"no such folder: {url}")
    return sorted(os.listdir(_local(url)))
