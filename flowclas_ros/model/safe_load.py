"""Reading torch ``.pth`` / Lightning ``.ckpt`` zip files without running any pickled code.

``torch.load(weights_only=True)`` refuses files that hold arbitrary objects,
such as the FlowCLAS authors' Lightning checkpoints (a pickled albumentations
``transform``) or mmengine ``meta`` entries. ``torch.load(weights_only=False)``
would execute whatever the pickle asks for. :func:`safe_torch_load` sits in
between: a ``pickle.Unpickler`` whose ``find_class`` resolves only a short list
of data constructors (tensor rebuild, ``OrderedDict``, ``set``...) to our own
implementations, turns every other class or function into an inert
:class:`Opaque` placeholder (no import, no call into foreign code), and refuses
globals from modules that can only mean code execution (``os``, ``subprocess``,
``builtins.eval`` ...). Tensor storages are rebuilt from the zip archive's
``data/<key>`` records via ``persistent_load``. Hand-written because neither
torch nor safetensors offers a loader that keeps foreign objects inert.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """The file is not a readable torch zip checkpoint, or its pickle asks for code execution."""


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}

_REFUSED_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pickle", "_pickle",
    "marshal", "code", "codeop", "ctypes", "webbrowser", "pty", "commands", "multiprocessing", "signal",
    "asyncio", "pdb", "timeit", "trace", "inspect", "builtins", "__builtin__",
}  # fmt: skip
"""Top-level modules whose globals are refused outright (placeholders would be inert too, but a
file that names them is hostile or broken, and the user should hear about it)."""

_SAFE_TYPES = (
    set,
    frozenset,
    complex,
    slice,
    bytearray,
    bytes,
    object,
    tuple,
    list,
    dict,
    int,
    float,
    str,
    bool,
)
_SAFE_BUILTINS = {t.__name__: t for t in _SAFE_TYPES}
"""Plain data constructors the unpickler may really call (none of them runs foreign code)."""


class Opaque:
    """Inert stand-in for an object of a class we do not load (e.g. an albumentations transform).

    It records the qualified name, constructor arguments and pickled state, and
    accepts the ``append`` / ``extend`` / item assignment calls the unpickler
    makes for list- or dict-like classes. It never calls anything.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:  # noqa: D102 - records, never calls
        obj = super().__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], entries={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs  # already recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:  # noqa: D102 - the APPEND opcode
        self.__dict__["items"].append(item)

    def extend(self, items: Any) -> None:  # noqa: D102 - the APPENDS opcode
        self.__dict__["items"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["entries"][key] = value

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _opaque_class(module: str, name: str) -> type:
    return type(name.split(".")[-1] or "Opaque", (Opaque,), {"qualname": f"{module}.{name}"})


class _StorageType:
    """What ``find_class("torch", "FloatStorage")`` returns: only the dtype is used."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Any, stride: Any, *_: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise UnsafeFileError("tensor record without a storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, *_: Any) -> torch.Tensor:
    del requires_grad  # we only read weights
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` (a tensor with Python state): the plain tensor, no state."""
    del new_type, state
    if func in (_rebuild_tensor, _rebuild_parameter):
        return func(*args)
    return Opaque(func, args)


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, source: Path):
        import io

        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._source = archive, prefix, source
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if full == "collections.OrderedDict":
            return OrderedDict
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if full == "torch._tensor._rebuild_from_type_v2":
            return _rebuild_from_type
        if module.split(".")[0] in _REFUSED_MODULES:
            raise UnsafeFileError(f"{self._source}: refusing global {full} (the file asks to run code)")
        return _opaque_class(module, name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeFileError(f"{self._source}: unsupported persistent record {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFileError(f"{self._source}: storage {key} has unknown type {storage_type!r:.80}")
        if key not in self._storages:
            record = f"{self._prefix}data/{key}"
            try:
                raw = bytearray(self._archive.read(record))
            except KeyError as exc:
                raise UnsafeFileError(f"{self._source}: missing storage record {record}") from exc
            flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self._storages[key] = flat.view(storage_type.dtype) if len(flat) else flat.to(storage_type.dtype)
        return self._storages[key]


def safe_torch_load(path: str | Path) -> Any:
    """Loads a torch zip checkpoint (``torch.save`` format, torch >= 1.6) without executing code.

    Tensors come back as CPU tensors (views of their storage), known containers
    as Python dicts / lists / tuples, everything else as :class:`Opaque`.

    Raises:
        UnsafeFileError: Not a torch zip file, a big-endian file, a malformed
            record, or a pickle that names a code-execution global.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnsafeFileError(f"{path}: not a torch zip checkpoint ({exc})") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafeFileError(f"{path}: not a torch zip checkpoint (no <archive>/data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise UnsafeFileError(f"{path}: big-endian checkpoints are not supported")
        try:
            return _SafeUnpickler(archive.read(pickles[0]), archive, prefix, path).load()
        except UnsafeFileError:
            raise
        except Exception as exc:  # malformed pickles raise many types
            raise UnsafeFileError(f"{path}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
