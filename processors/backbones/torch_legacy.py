"""Read a state dict saved in torch's legacy (pre-1.6, non-zip) format, without torch.

``torch.load`` unpickles arbitrary objects, so loading a weights file with it runs whatever
the file names; and torch is a large dependency we do not want at runtime. The legacy
format is a sequence of pickles: a magic number, a protocol version, system information,
the state dict (tensors point to storages through persistent ids), the list of storage
keys, then each storage's raw bytes. This module unpickles with an allow-list of four
kinds of globals (``OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the typed
storage classes), each replaced by an inert stand-in, then reads the storages and builds
numpy arrays from them, honouring offsets and strides.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ZIP_SIGNATURE = b"PK\x03\x04"

STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class LegacyFormatError(ValueError):
    """The file is not a torch legacy state dict this reader can read safely."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only its dtype matters."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage named in the pickle; its bytes come after the pickle ends."""

    key: str
    dtype: np.dtype[Any]
    numel: int
    view: tuple[str, int, int] | None  # (root key, element offset, element count)


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it, resolved once storages are read."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    """Record a tensor's layout instead of building it (gradient flags are irrelevant)."""
    if not isinstance(storage, _StorageRef):
        raise LegacyFormatError(f"a tensor refers to {type(storage).__name__}, not a storage")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise LegacyFormatError(f"bad storage offset {storage_offset!r}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise LegacyFormatError(f"size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, storage_offset, shape, strides)


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(item, int) and not isinstance(item, bool) and item >= 0 for item in value
    ):
        raise LegacyFormatError(f"bad tensor {what} {value!r}")
    return value


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a legacy state dict needs."""

    def find_class(self, module: str, name: str) -> Any:
        """Map the allowed globals to inert stand-ins; refuse everything else."""
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise LegacyFormatError(
            f"refusing to load global {module}.{name}: a state dict only needs "
            "collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch storage types"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        """Turn ``('storage', type, key, location, numel, view)`` into a storage reference."""
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise LegacyFormatError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view = pid
        if not isinstance(storage_type, _StorageType):
            raise LegacyFormatError(f"persistent id names {storage_type!r}, not a storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise LegacyFormatError(f"bad storage key or size in {pid!r}")
        if view is not None and not (
            isinstance(view, tuple)
            and len(view) == 3
            and isinstance(view[0], str)
            and all(isinstance(item, int) and item >= 0 for item in view[1:])
        ):
            raise LegacyFormatError(f"bad storage view {view!r}")
        return _StorageRef(key, storage_type.dtype, numel, view)


def load_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    """Read the legacy ``.pth`` file at ``path`` into name → array (copies, C-contiguous)."""
    with open(path, "rb") as file:
        return read_state_dict(file, source=str(path))


def read_state_dict(file: BinaryIO, source: str = "<stream>") -> dict[str, np.ndarray]:
    """Read a legacy state dict from an open binary file positioned at its start."""
    head = file.read(4)
    if head == ZIP_SIGNATURE:
        raise LegacyFormatError(
            f"{source} is in torch's zip format (torch >= 1.6), not the legacy format this "
            "reader handles"
        )
    file.seek(-len(head), io.SEEK_CUR)
    try:
        magic = _unpickle(file)
        if magic != MAGIC_NUMBER:
            raise LegacyFormatError(f"{source} is not a torch legacy file (bad magic number)")
        protocol = _unpickle(file)
        if protocol != PROTOCOL_VERSION:
            raise LegacyFormatError(f"{source}: unsupported protocol version {protocol!r}")
        system = _unpickle(file)
        if not isinstance(system, dict) or system.get("little_endian") is not True:
            raise LegacyFormatError(f"{source} was written big-endian or without system info")
        state = _unpickle(file)
        keys = _unpickle(file)
    except LegacyFormatError:
        raise
    except Exception as error:  # whatever a damaged pickle makes the unpickler raise
        raise LegacyFormatError(f"{source} is truncated or corrupt: {error!r}") from error
    if not isinstance(state, dict):
        raise LegacyFormatError(f"{source} holds a {type(state).__name__}, not a state dict")
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise LegacyFormatError(f"{source}: the storage key list is malformed")
    refs = _collect_tensors(state, source)
    storages = _read_storages(file, keys, refs.values(), source)
    return {name: _materialise(ref, storages, source) for name, ref in refs.items()}


def _unpickle(file: BinaryIO) -> Any:
    return _RestrictedUnpickler(file).load()


def _collect_tensors(state: dict[Any, Any], source: str) -> dict[str, _TensorRef]:
    refs: dict[str, _TensorRef] = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise LegacyFormatError(f"{source}: entry {name!r} is not a named tensor")
        refs[name] = value
    return refs


def _read_storages(
    file: BinaryIO, keys: list[str], refs: Iterable[_TensorRef], source: str
) -> dict[str, np.ndarray]:
    """Read each root storage's ``<i8`` element count and raw bytes, in key-list order."""
    expected: dict[str, _StorageRef] = {}
    for ref in refs:
        storage = ref.storage
        if storage.view is None:
            expected[storage.key] = storage
        else:  # a view's root is only named through it: its size comes with the data
            expected.setdefault(
                storage.view[0], _StorageRef(storage.view[0], storage.dtype, -1, None)
            )
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        header = file.read(8)
        if len(header) != 8:
            raise LegacyFormatError(f"{source} is truncated: storage {key} has no header")
        (numel,) = struct.unpack("<q", header)
        root = expected.get(key)
        if root is None:  # without a tensor using it, its dtype (so its length) is unknown
            raise LegacyFormatError(f"{source}: storage {key} is not used by any tensor")
        if numel < 0 or (root.numel >= 0 and numel != root.numel):
            raise LegacyFormatError(
                f"{source}: storage {key} holds {numel} elements, not {root.numel}"
            )
        size = numel * root.dtype.itemsize
        data = file.read(size)
        if len(data) != size:
            raise LegacyFormatError(f"{source} is truncated inside storage {key}")
        storages[key] = np.frombuffer(data, dtype=root.dtype)
    missing = expected.keys() - storages.keys()
    if missing:
        raise LegacyFormatError(f"{source}: storages {sorted(missing)} have no data")
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray], source: str) -> np.ndarray:
    """Copy the tensor's elements out of its storage, checking every index is in bounds."""
    storage = ref.storage
    if storage.view is None:
        flat = storages[storage.key]
    else:
        root, start, count = storage.view
        flat = storages[root][start : start + count]
        if len(flat) != count:
            raise LegacyFormatError(f"{source}: view {storage.key} overruns storage {root}")
    if flat.dtype != storage.dtype:
        raise LegacyFormatError(f"{source}: storage {storage.key} is read with two dtypes")
    if any(size == 0 for size in ref.shape):
        return np.zeros(ref.shape, dtype=flat.dtype)
    last = ref.offset + sum(
        (size - 1) * stride for size, stride in zip(ref.shape, ref.strides, strict=True)
    )
    if last >= len(flat):
        raise LegacyFormatError(f"{source}: a tensor reaches past the end of {storage.key}")
    window = flat[ref.offset :]
    itemsize = flat.dtype.itemsize
    strided = np.lib.stride_tricks.as_strided(
        window,
        shape=ref.shape,
        strides=tuple(stride * itemsize for stride in ref.strides),
        writeable=False,
    )
    return np.array(strided, order="C")
