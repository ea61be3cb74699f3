"""Caches of derived model files: ONNX exports and TensorRT engines, with the keys that make them safe.

A TensorRT engine is only valid for the exact ONNX graph, input shape,
precision, TensorRT version and GPU it was built for. Each engine therefore
has a JSON sidecar (``model.engine.json``) holding its :class:`EngineKey`, the
engine bytes' sha256 and the export metadata. An engine whose sidecar is
missing, corrupt or names another key is rebuilt (when the ONNX is at hand) or
refused with the differing fields; it is never deserialised blindly.

Several processes (two nodes, a node and ``flowclas-export``) may want the same engine
at once: :func:`resolve_engine` holds an exclusive ``fcntl`` lock on ``<engine>.lock``
while it checks and builds, so one process builds and the others wait and then load it.

This module is pure Python: it needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from flowclas_ros.model.checkpoint_meta import sha256_file

logger = logging.getLogger(__name__)

CACHE_ENV = "FLOWCLAS_CACHE_DIR"
SIDECAR_FORMAT = 2  # 2: strongly typed builds (precision from the ONNX), opt_batch; 1 had fp32_flow
PRECISIONS = ("fp32", "fp16", "fp16-all")


class EngineCacheError(RuntimeError):
    """An engine cannot be used: missing / corrupt sidecar, mismatched key, or changed engine bytes."""


def default_cache_dir() -> Path:
    """``$FLOWCLAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/flowclas_ros``, else ``~/.cache/flowclas_ros``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "flowclas_ros"


def onnx_cache_path(
    cache_dir: str | Path | None,
    checkpoint_sha256: str,
    input_size: tuple[int, int],
    dynamic_batch: bool,
    precision: str = "fp32",
) -> Path:
    """Where the ONNX export of a checkpoint is cached (keyed by checkpoint hash, size, batch, precision)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    batch = "dynbatch" if dynamic_batch else "b1"
    suffix = "" if precision == "fp32" else f"-{precision}"
    return root / "onnx" / f"{checkpoint_sha256[:16]}-{input_size[0]}x{input_size[1]}-{batch}{suffix}.onnx"


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized TensorRT engine depends on.

    Attributes:
        onnx_sha256: Hash of the ONNX file the engine was built from.
        input_shape: (1, 3, H, W): the image size the engine takes.
        max_batch: Largest batch the engine accepts (1 for a static engine).
        opt_batch: The optimisation profile's ``opt`` batch (the number of cameras).
        precision: What the (strongly typed) ONNX computes in: ``fp32``, ``fp16`` (backbone float16,
            flow and scoring float32) or ``fp16-all``.
        version_compatible: Built with ``BuilderFlag.VERSION_COMPATIBLE``.
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        compute_capability: GPU compute capability, e.g. ``8.7`` (Jetson Orin).
    """

    onnx_sha256: str
    input_shape: tuple[int, int, int, int]
    max_batch: int
    opt_batch: int
    precision: str
    version_compatible: bool
    tensorrt_version: str
    compute_capability: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_dict`; raises KeyError / TypeError / ValueError on bad data."""
        names = {f.name for f in fields(cls)}
        if set(data) != names:
            raise ValueError(f"engine key fields {sorted(data)} != {sorted(names)}")
        return cls(**{**data, "input_shape": tuple(data["input_shape"])})

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the cache file name."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def make_engine_key(
    onnx_path: str | Path,
    *,
    input_size: tuple[int, int],
    precision: str,
    max_batch: int,
    opt_batch: int,
    version_compatible: bool,
    tensorrt_version: str,
    compute_capability: str,
) -> EngineKey:
    """The key of an engine built from ``onnx_path`` (hashes the file)."""
    return EngineKey(
        onnx_sha256=sha256_file(Path(onnx_path)),
        input_shape=(1, 3, int(input_size[0]), int(input_size[1])),
        max_batch=int(max_batch),
        opt_batch=min(max(1, int(opt_batch)), max(1, int(max_batch))),
        precision=precision,
        version_compatible=bool(version_compatible),
        tensorrt_version=str(tensorrt_version),
        compute_capability=str(compute_capability),
    )


def engine_cache_path(cache_dir: str | Path | None, key: EngineKey) -> Path:
    """Default engine location for a key: ``<cache>/tensorrt/<digest>.engine``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "tensorrt" / f"{key.digest()[:24]}.engine"


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def tensorrt_version_ok(built: str, running: str, version_compatible: bool) -> bool:
    """Same version, or (version-compatible engine) same major and a runtime at least as new."""
    if built == running:
        return True
    if not version_compatible:
        return False
    b, r = _version_tuple(built), _version_tuple(running)
    return bool(b) and bool(r) and b[0] == r[0] and r >= b


def key_mismatches(expected: EngineKey, stored: EngineKey) -> list[str]:
    """Human-readable differences, empty when ``stored`` may be used where ``expected`` is needed."""
    problems = []
    for name in (f.name for f in fields(EngineKey)):
        want, have = getattr(expected, name), getattr(stored, name)
        if name == "tensorrt_version":
            if not tensorrt_version_ok(have, want, stored.version_compatible):
                problems.append(f"built with TensorRT {have}, running {want}")
        elif want != have:
            problems.append(f"{name}: engine has {have!r}, need {want!r}")
    return problems


@dataclass
class EngineRecord:
    """An engine's sidecar: its key, the engine bytes' hash, the export metadata and build facts."""

    key: EngineKey
    engine_sha256: str
    metadata: dict[str, str]
    built_at: str = ""
    build_seconds: float = 0.0
    onnx_path: str = ""

    @classmethod
    def built(
        cls, key: EngineKey, metadata: dict[str, str], started: float, onnx_path: str = ""
    ) -> EngineRecord:
        """The record of an engine whose build began at ``time.perf_counter()`` = ``started``."""
        return cls(
            key=key,
            engine_sha256="",  # write_engine fills it in
            metadata=dict(metadata),
            built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            build_seconds=round(time.perf_counter() - started, 2),
            onnx_path=onnx_path,
        )

    def to_json(self) -> str:
        """Sidecar file content."""
        body = {"format": SIDECAR_FORMAT, **asdict(self), "key": self.key.to_dict()}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


def read_record(engine_path: str | Path) -> EngineRecord:
    """Reads an engine's sidecar.

    Raises:
        EngineCacheError: Missing, unreadable or malformed sidecar (names the file).
    """
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineCacheError(
            f"{path}: missing; an engine without its key file is never loaded "
            "(rebuild it with flowclas-export)"
        )
    try:
        data = json.loads(path.read_text())
        found = data.pop("format")
        if found != SIDECAR_FORMAT:
            raise ValueError(
                f"sidecar format {found} (an older flowclas_ros), this one reads {SIDECAR_FORMAT}"
            )
        data["key"] = EngineKey.from_dict(data["key"])
        return EngineRecord(**data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineCacheError(f"{path}: corrupt engine key file ({type(exc).__name__}: {exc})") from exc


def write_engine(engine_path: str | Path, engine: bytes, record: EngineRecord) -> Path:
    """Writes the engine and then its sidecar, each atomically (rename), and returns the engine path."""
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    record.engine_sha256 = hashlib.sha256(engine).hexdigest()
    for target, payload in ((engine_path, engine), (sidecar_path(engine_path), record.to_json().encode())):
        staged = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        staged.write_bytes(payload)
        os.replace(staged, target)
    return engine_path


def load_checked_engine(engine_path: str | Path, expected: EngineKey) -> tuple[bytes, EngineRecord]:
    """Returns the engine bytes and record if the sidecar matches ``expected`` and the bytes are intact.

    Raises:
        EngineCacheError: Missing engine or sidecar, key mismatch (lists the fields), changed bytes.
    """
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineCacheError(f"{engine_path}: engine file not found")
    record = read_record(engine_path)
    problems = key_mismatches(expected, record.key)
    if problems:
        raise EngineCacheError(f"{engine_path} does not fit this model / machine: {'; '.join(problems)}")
    engine = engine_path.read_bytes()
    if hashlib.sha256(engine).hexdigest() != record.engine_sha256:
        raise EngineCacheError(f"{engine_path}: engine bytes changed since it was built (sha256 mismatch)")
    return engine, record


@contextlib.contextmanager
def engine_lock(engine_path: str | Path, timeout_s: float = 3600.0) -> Iterator[None]:
    """Exclusive inter-process lock for one engine path (``<engine>.lock``, ``fcntl.flock``).

    An engine build takes minutes on a Jetson; a second process asking for the same engine
    waits here (logging once) instead of building it again or reading a half-written file.
    The lock is released when the holder exits, even if it crashes.

    Raises:
        EngineCacheError: Not acquired within ``timeout_s``.
    """
    lock_path = Path(engine_path).with_name(Path(engine_path).name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:  # noqa: PTH123 - the descriptor is what flock needs
        deadline = time.monotonic() + timeout_s
        logged = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not logged:
                    logger.info("waiting for another process building %s", engine_path)
                    logged = True
                if time.monotonic() > deadline:
                    raise EngineCacheError(
                        f"{lock_path}: still locked by another process after {timeout_s:g} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def resolve_engine(
    engine_path: str | Path,
    expected: EngineKey,
    build: Callable[[], bytes] | None,
    metadata: dict[str, str],
    onnx_path: str | Path = "",
) -> tuple[bytes, EngineRecord]:
    """Loads a matching cached engine, or builds (and caches) a new one.

    Args:
        engine_path: Engine file location.
        expected: The key the engine must have.
        build: Builds the engine bytes; None means refuse instead of rebuilding.
        metadata: Export metadata stored in a new sidecar (config, checkpoint hash, input size).
        onnx_path: Recorded in a new sidecar.

    Raises:
        EngineCacheError: No usable engine and ``build`` is None (message lists why).
    """
    with engine_lock(engine_path):
        return _resolve_locked(engine_path, expected, build, metadata, onnx_path)


def _resolve_locked(
    engine_path: str | Path,
    expected: EngineKey,
    build: Callable[[], bytes] | None,
    metadata: dict[str, str],
    onnx_path: str | Path,
) -> tuple[bytes, EngineRecord]:
    try:
        return load_checked_engine(engine_path, expected)
    except EngineCacheError as exc:
        if build is None:
            raise
        if Path(engine_path).exists():
            logger.warning("rebuilding TensorRT engine: %s", exc)
    start = time.perf_counter()
    engine = build()
    record = EngineRecord.built(expected, metadata, start, onnx_path=str(onnx_path))
    write_engine(engine_path, engine, record)
    return engine, record


def environment_key(stored: EngineKey, *, tensorrt_version: str, compute_capability: str) -> EngineKey:
    """``stored`` with this machine's TensorRT version and GPU: what an engine-only load must match."""
    return replace(stored, tensorrt_version=tensorrt_version, compute_capability=compute_capability)
