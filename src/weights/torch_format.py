"""Read PyTorch checkpoint files without PyTorch, and without letting the file run code.

A pickle names the functions that rebuild its objects, and unpickling calls them: a hostile file can
name any function it likes. Here every name is looked up in an exact table; anything else stops the
read before it is called, with "refusing to load X.Y from FILE: a checkpoint may only hold tensors".

What a file may hold:
- plain data (dicts, lists, tuples, strings, numbers, None, booleans), `collections.OrderedDict`;
- tensors and parameters (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`,
  `_rebuild_parameter_with_state`) on the typed storages listed in STORAGE_DTYPES; they come back as
  NumPy arrays (bfloat16 as float32), views cut from their storage with bounds checked;
- with `modules=True` only (a whole pickled module, as DALL-E's `encoder.pkl`): the torch module
  classes in MODULE_CLASSES and the classes of the packages in `stub_packages`, all rebuilt as inert
  `PickledModule` objects that only hold attributes, plus `torch.device` (kept as a string) and
  `builtins.set`.

Files are PyTorch's zip format (torch.save since 1.6). The legacy format gets an error saying how to
re-save it.
"""
import collections
import pickle
import zipfile

import numpy as np

from src.errors import UserInputError, first_line

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "HalfStorage": np.float16, "BFloat16Storage": np.uint16,
    "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# nn.Module classes that a pickled DALL-E encoder holds besides its own
MODULE_CLASSES = (
    ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.linear", "Identity"),
)
# protocol 2 writes Python 3 names in their Python 2 spelling
PYTHON2_MODULES = {"__builtin__": "builtins"}


class PickledModule:
    """A pickled nn.Module rebuilt as attributes only: its class's code is never imported."""


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    def __init__(self, values, bfloat16):
        self.values, self.bfloat16 = values, bfloat16


def _bfloat16_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles with the exact globals of the table above; rebuilders are bound methods, so that a file
    cannot set attributes on shared functions."""

    def __init__(self, file, path, archive=None, data_prefix="", byte_order="<", modules=False, stub_packages=()):
        super().__init__(file)
        self.path, self.archive, self.data_prefix, self.byte_order = path, archive, data_prefix, byte_order
        self.storages = {}
        self.allowed = {
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
        }
        self.stub_packages = tuple(stub_packages) if modules else ()
        self.stubs = {}
        if modules:
            self.allowed.update({("torch", "device"): self._device, ("builtins", "set"): set})
            self.allowed.update({key: self._stub(*key) for key in MODULE_CLASSES})

    def refuse(self, module, name):
        raise UserInputError(f"refusing to load {module}.{name} from {self.path}: a checkpoint may only hold tensors")

    def find_class(self, module, name):
        module = PYTHON2_MODULES.get(module, module)
        if (module, name) in self.allowed:
            return self.allowed[module, name]
        if module.split(".")[0] in self.stub_packages:
            return self._stub(module, name)
        self.refuse(module, name)

    def _stub(self, module, name):
        key = f"{module}.{name}"
        if key not in self.stubs:
            self.stubs[key] = type(name, (PickledModule,), {"__module__": "pickled." + module})
        return self.stubs[key]

    def _device(self, *args):
        return ":".join(str(arg) for arg in args)

    def persistent_load(self, pid):
        if self.archive is None:
            raise UserInputError(f"{self.path} refers to tensor data outside the pickle: not a PyTorch zip checkpoint")
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise UserInputError(f"{self.path}: unexpected storage reference {pid!r:.80}")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            dtype = np.dtype(STORAGE_DTYPES[storage_type.name])
            try:
                raw = self.archive.read(f"{self.data_prefix}data/{key}")
            except KeyError:
                raise UserInputError(f"{self.path} lacks the data of storage {key!r}") from None
            if numel < 0 or len(raw) < numel * dtype.itemsize:
                raise UserInputError(f"{self.path}: storage {key!r} is shorter than its {numel} elements")
            values = np.frombuffer(raw, dtype=dtype.newbyteorder(self.byte_order), count=numel)
            self.storages[key] = _Storage(values, storage_type.name == "BFloat16Storage")
        return self.storages[key]

    def _rebuild_tensor(self, storage, offset, size, stride, *_requires_grad_hooks_metadata):
        """A copy of the view (offset, size, stride) of `storage`, each index checked to lie inside it."""
        valid = (isinstance(storage, _Storage) and isinstance(offset, int) and isinstance(size, tuple)
                 and isinstance(stride, tuple) and len(size) == len(stride)
                 and all(isinstance(n, int) and n >= 0 for n in size + stride) and offset >= 0)
        if not valid:
            raise UserInputError(f"{self.path}: malformed tensor record")
        values = storage.values
        if all(size):
            last = offset + sum((n - 1) * step for n, step in zip(size, stride))
            if last >= values.size:
                raise UserInputError(f"{self.path}: a tensor reaches past the end of its storage")
            view = np.lib.stride_tricks.as_strided(values[offset:], shape=size,
                                                   strides=[step * values.itemsize for step in stride])
            array = np.array(view, dtype=values.dtype.newbyteorder("="))
        else:
            array = np.zeros(size, dtype=values.dtype.newbyteorder("="))
        return _bfloat16_to_float32(array) if storage.bfloat16 else array

    def _rebuild_parameter(self, data, *_requires_grad_hooks_state):
        return data


def _unpickle(file, path, **kwargs):
    try:
        return _RestrictedUnpickler(file, path, **kwargs).load()
    except UserInputError:
        raise
    except Exception as err:  # truncated or malformed pickles raise many types
        raise UserInputError(f"cannot read {path} as a PyTorch checkpoint: {first_line(err)}") from None


def read_torch_file(path, modules=False, stub_packages=()):
    """The object saved in a PyTorch checkpoint file, tensors as NumPy arrays.

    `modules` admits a whole pickled nn.Module (see the module docstring); classes of `stub_packages`
    (e.g. ("dall_e",)) become PickledModule stubs.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            first = _unpickle(file, path, modules=modules, stub_packages=stub_packages)
        if first == LEGACY_MAGIC_NUMBER:
            raise UserInputError(
                f"{path} is in PyTorch's legacy (pre-1.6) format, which is not read here: re-save it with "
                f"torch.save(torch.load(FILE, weights_only=True), NEW_FILE) and convert NEW_FILE")
        raise UserInputError(f"{path} is not a PyTorch checkpoint (no zip archive)")
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise UserInputError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][:-len("data.pkl")]
        byte_order = "<"
        if f"{prefix}byteorder" in archive.namelist():
            byte_order = {"little": "<", "big": ">"}.get(archive.read(f"{prefix}byteorder").decode().strip(), "<")
        with archive.open(pickles[0]) as file:
            return _unpickle(file, path, archive=archive, data_prefix=prefix, byte_order=byte_order,
                             modules=modules, stub_packages=stub_packages)


def module_state_dict(module, prefix=""):
    """{name: array} of a PickledModule tree, as nn.Module.state_dict names it (non-persistent buffers left out)."""
    attributes = vars(module)
    state = {}
    skipped = attributes.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (attributes.get(group) or {}).items():
            if isinstance(value, np.ndarray) and name not in skipped:
                state[prefix + name] = value
    for name, child in (attributes.get("_modules") or {}).items():
        if child is not None:
            state.update(module_state_dict(child, f"{prefix}{name}."))
    return state
