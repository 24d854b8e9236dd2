"""Published files fetched once into a cache: from the Hugging Face Hub through huggingface_hub (its cache,
HF_ENDPOINT, HF_HUB_OFFLINE), or from their authors' URLs through huggingface_hub's HTTP client, resumed from
the part already received and checked against the sha256 the authors publish."""
import hashlib
import os

import httpx2
from filelock import FileLock
from huggingface_hub import constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.file_download import http_get

from src.errors import UserInputError, first_line, make_folder

RANGE_NOT_SATISFIABLE = 416
NETWORK_ERRORS = (HfHubHTTPError, EntryNotFoundError, httpx2.HTTPError, OSError, ValueError)


def _shown(url):
    return url.split("?")[0]  # a signed URL's query is a credential


def fetch_hub_file(repo_id, filename):
    """The local path of `filename` in the hub repository `repo_id`, downloaded into the Hugging Face cache once."""
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        return hf_hub_download(repo_id, filename, endpoint=endpoint)
    except LocalEntryNotFoundError:
        raise UserInputError(f"{repo_id}/{filename} is not in the Hugging Face cache and {endpoint} cannot be used "
                             "(HF_HUB_OFFLINE is set or the network is down): run once where it can be reached, or "
                             "set HF_ENDPOINT to a mirror") from None
    except NETWORK_ERRORS as err:
        raise UserInputError(f"cannot download {filename} of {repo_id} from {endpoint}: {first_line(err)}") from None


def fetch_url(url, folder, filename, sha256=""):
    """The local path `folder/filename` of `url`, downloaded once. An interrupted download leaves
    `filename.part`, which the next call continues; a file whose sha256 does not start with `sha256` is
    removed, with an error."""
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
        return path
    if constants.HF_HUB_OFFLINE:
        raise UserInputError(f"{filename} is not in the cache {folder} and HF_HUB_OFFLINE is set: "
                             f"download {_shown(url)} where it can be reached")
    make_folder(folder, "for the downloaded weights")
    partial = path + ".part"
    with FileLock(path + ".lock"):  # other processes of a distributed run wait for the first one's download
        if os.path.isfile(path):
            return path
        received = os.path.getsize(partial) if os.path.isfile(partial) else 0
        with open(partial, "ab") as out:
            try:
                http_get(url, out, resume_size=received, displayed_filename=filename)
            except HfHubHTTPError as err:
                complete = received and err.response is not None \
                    and err.response.status_code == RANGE_NOT_SATISFIABLE
                if not complete:  # else the part held the whole file already: it is checked below
                    raise UserInputError(f"cannot download {_shown(url)}: {first_line(err)}") from None
            except NETWORK_ERRORS as err:
                raise UserInputError(f"cannot download {_shown(url)}: {first_line(err)} (the part received is kept "
                                     f"in {partial}: run again to resume)") from None
        if sha256:
            digest = file_sha256(partial)
            if not digest.startswith(sha256):
                os.remove(partial)
                raise UserInputError(f"checksum mismatch for {_shown(url)}: its sha256 is {digest}, the authors "
                                     f"publish {sha256}...; the download is removed")
        os.replace(partial, path)
    return path


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
