"""A stand-in for ModelArts' moxing in the tests: `obs://` URLs are folders under $FAKE_OBS_ROOT.

Only what the project calls, with moxing's copy semantics: `file.copy_parallel(src_dir, dst_dir)` copies a
folder's contents into dst_dir (made if absent, existing files overwritten), `file.copy(src, dst)` one file.
Every copy is appended to $FAKE_OBS_ROOT/copies.log; $FAKE_OBS_DELAY seconds of sleep make copies slow.
"""
from . import file  # noqa: F401
