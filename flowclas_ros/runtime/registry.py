"""The backend table: every inference backend declared once, and the one precision vocabulary.

Each :class:`BackendSpec` says a backend's name, its factory (imported on first use), the
precisions it runs, what it needs installed, and its options (which keyword takes the
precision, which the CPU thread count). Everything else reads this table: the node's
``backend`` / ``precision`` parameter checks (:mod:`flowclas_ros.ros.params`,
:mod:`flowclas_ros.ros.settings`), the ``--backend`` choices of ``flowclas-eval`` and
``flowclas-predict``, ``flowclas-export --precision`` and docs/ARCHITECTURE.md. Adding a
backend is one :func:`register_backend` call (or one entry below).

No numpy, torch or rclpy here: launch files and the parameter checks import it.

Precisions, for every backend: ``auto`` (the backend picks, see its entry), ``f32``,
``bf16``, ``f16``, ``int8``. The older spellings ``fp32``, ``fp16`` and ``fp16-all`` (TensorRT:
fp16 with the flow in fp16 too) are still accepted, with a deprecation warning.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "f32", "bf16", "f16", "int8")
"""The one precision vocabulary."""

OLD_SPELLINGS = {"fp32": "f32", "fp16": "f16", "fp16-all": "f16"}
"""Deprecated spelling -> its name in :data:`PRECISIONS` (``fp16-all`` keeps its meaning where used)."""


@dataclass(frozen=True)
class BackendSpec:
    """One row of the backend table.

    Attributes:
        name: Backend kind (``backend`` parameter / ``--backend`` value).
        factory: The backend class (or any callable ``factory(checkpoint, device=..., **options)``),
            or ``"module:attribute"`` imported on first use (keeps imports lazy).
        precisions: What its ``precision`` accepts, in :data:`PRECISIONS` spelling (``auto``
            first); ``("auto", "f32")`` for a backend without a precision choice.
        precision_option: Its constructor keyword for the precision, or None (then only
            ``auto`` / ``f32`` are accepted and nothing is passed).
        thread_option: Its constructor keyword for the CPU thread count (``auto`` or N), or None.
        sized: It builds its model for one input size, so takes ``input_size=(H, W)`` (an
            exported graph); False: it runs any size (the caller sets the config's size).
        batch_option: How it is told to score several frames per call: ``dynamic_batch``
            (``True``: a dynamic-batch export) or ``max_batch`` (``N``: an engine built for N), or None.
        export_format: The ``flowclas-export --format`` that makes its model file, or None.
        requires: pip packages it needs beyond the base install.
        options: Its other constructor keywords, documented.
        description: One line for the docs.
    """

    name: str
    factory: str | Callable[..., Any]
    precisions: tuple[str, ...] = ("auto", "f32")
    precision_option: str | None = None
    thread_option: str | None = None
    sized: bool = False
    batch_option: str | None = None
    export_format: str | None = None
    requires: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or "auto" not in self.precisions:
            raise ValueError(
                f"backend {self.name!r}: precisions must include auto and come from {PRECISIONS}, "
                f"got {self.precisions}"
            )


TABLE: dict[str, BackendSpec] = {}
"""Backend kind -> :class:`BackendSpec`, in registration order."""


def register_backend(
    kind: str | BackendSpec, factory: str | Callable[..., Any] | None = None, **fields: Any
) -> BackendSpec:
    """Adds (or replaces) a row: ``register_backend(BackendSpec(...))`` or ``(name, factory)``.

    The second form (the former API) keeps the rest of an existing row (a new factory for a
    known backend); a new name declares only ``auto`` / ``f32`` and no options unless
    ``fields`` gives them (keywords of :class:`BackendSpec`).
    """
    if isinstance(kind, BackendSpec):
        row = kind
    elif factory is None:
        raise ValueError(f"register_backend({kind!r}): a factory is required")
    elif kind in TABLE:
        row = dataclasses.replace(TABLE[kind], factory=factory, **fields)
    else:
        row = BackendSpec(kind, factory, **fields)
    TABLE[row.name] = row
    return row


def backend_names() -> tuple[str, ...]:
    """Every registered backend kind, in registration order."""
    return tuple(TABLE)


def spec(kind: str) -> BackendSpec:
    """The row of ``kind``.

    Raises:
        ValueError: Unknown kind (lists the registered ones).
    """
    if kind not in TABLE:
        raise ValueError(f"unknown backend {kind!r}; available: {', '.join(TABLE)}")
    return TABLE[kind]


def all_precision_spellings() -> tuple[str, ...]:
    """Every accepted ``precision`` value: the vocabulary, then the deprecated spellings."""
    return PRECISIONS + tuple(OLD_SPELLINGS)


def canonical_precision(value: str, *, warn: bool = True) -> str:
    """``value`` in :data:`PRECISIONS` spelling; an old spelling is translated with a deprecation warning.

    Raises:
        ValueError: Not a precision at all.
    """
    if value in PRECISIONS:
        return value
    if value in OLD_SPELLINGS:
        new = OLD_SPELLINGS[value]
        if warn:
            message = f"precision {value!r} is deprecated; use {new!r}"
            if value == "fp16-all":
                message += " (with the flow in f16 too: flowclas-export --fp16 --fp16-flow)"
            warnings.warn(message, DeprecationWarning, stacklevel=3)
            logger.warning(message)
        return new
    raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")


def check_precision(kind: str, value: str) -> str | None:
    """Why ``value`` is not a precision of backend ``kind`` (one line), or None."""
    try:
        precision = canonical_precision(value, warn=False)
        row = spec(kind)
    except ValueError as err:
        return str(err)
    if precision not in row.precisions:
        return f"precision {value}: the {kind} backend runs {', '.join(row.precisions)}"
    return None


def backend_options(
    kind: str,
    precision: str = "auto",
    threads: int | str | None = None,
    input_size: tuple[int, int] | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """The constructor keywords for a precision, thread count, input size and batch, as ``kind`` names them.

    ``input_size`` is passed only to a ``sized`` backend and ``batch`` > 1 only through its
    ``batch_option``; the caller resizes the others itself.

    Old precision spellings pass through unchanged where the backend knows them
    (TensorRT's ``fp16-all``); otherwise the canonical spelling is passed.

    Raises:
        ValueError: Unknown backend, or a precision it does not run.
    """
    reason = check_precision(kind, precision)
    if reason:
        raise ValueError(reason)
    row = spec(kind)
    options: dict[str, Any] = {}
    if row.precision_option is not None:
        canonical = canonical_precision(precision)  # warns on an old spelling
        options[row.precision_option] = precision if precision == "fp16-all" else canonical
    if row.thread_option is not None and threads is not None:
        options[row.thread_option] = threads
    if row.sized and input_size is not None:
        options["input_size"] = (int(input_size[0]), int(input_size[1]))
    if batch > 1 and row.batch_option == "dynamic_batch":
        options["dynamic_batch"] = True
    elif batch > 1 and row.batch_option == "max_batch":
        options["max_batch"] = int(batch)
    return options


def markdown_table() -> str:
    """The backend table as markdown, as docs/DEPLOY.md shows it (a test keeps the two equal)."""
    lines = [
        "| backend | precisions | needs | thread option | made by `flowclas-export --format` | notes |",
        "|---|---|---|---|---|---|",
    ]
    for row in TABLE.values():
        cells = [
            f"`{row.name}`",
            ", ".join(row.precisions),
            ", ".join(row.requires) or "-",
            f"`{row.thread_option}`" if row.thread_option else "-",
            f"`{row.export_format}`" if row.export_format else "-",
            row.description,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class FactoryView(Mapping):
    """``BACKENDS``: backend kind -> factory, read from :data:`TABLE` (the former registry's shape)."""

    def __getitem__(self, kind: str) -> str | Callable[..., Any]:
        return TABLE[kind].factory

    def __iter__(self) -> Iterator[str]:
        return iter(TABLE)

    def __len__(self) -> int:
        return len(TABLE)

    def __setitem__(self, kind: str, factory: str | Callable[..., Any]) -> None:
        register_backend(kind, factory)


_THREADS = "CPU threads: auto (the CPUs this process may use) or N"
register_backend(
    BackendSpec(
        "torch",
        "flowclas_ros.runtime.torch_backend:TorchBackend",
        precisions=("auto", "f32", "f16", "bf16"),
        precision_option="precision",
        thread_option="threads",
        requires=("torch", "torchvision"),
        options={"compile": "wrap feature extraction and scoring in torch.compile"},
        description="PyTorch; auto = f16 backbone on CUDA, f32 on the CPU; f16/bf16 need CUDA",
    )
)
register_backend(
    BackendSpec(
        "onnxruntime",
        "flowclas_ros.runtime.onnx_backend:OnnxRuntimeBackend",
        precisions=("auto", "f32"),
        thread_option="intra_op_threads",
        sized=True,
        batch_option="dynamic_batch",
        export_format="onnx",
        requires=("onnxruntime",),
        options={
            "inter_op_threads": "default 1 (> 1: parallel executor)",
            "graph_optimization": "all | extended | basic | disable",
            "allow_spinning": "busy-wait between ops (off)",
        },
        description="ONNX Runtime on the flowclas-export ONNX (CPU, or CUDA with onnxruntime-gpu)",
    )
)
register_backend(
    BackendSpec(
        "openvino",
        "flowclas_ros.runtime.openvino_backend:OpenVINOBackend",
        precisions=("auto", "f32", "bf16", "int8"),
        precision_option="precision",
        thread_option="threads",
        sized=True,
        batch_option="dynamic_batch",
        export_format="openvino",
        requires=("openvino", "nncf (int8 export)"),
        options={"device": "CPU, GPU, NPU or AUTO"},
        description="OpenVINO; auto = bf16 where the CPU has it natively and the export passed its AP "
        "gate, int8 for a quantised export, else f32",
    )
)
register_backend(
    BackendSpec(
        "tensorrt",
        "flowclas_ros.runtime.tensorrt_backend:TensorRTBackend",
        precisions=("auto", "f32", "f16"),
        precision_option="precision",
        sized=True,
        batch_option="max_batch",
        export_format="engine",
        requires=("tensorrt", "cuda-python"),
        options={"max_batch": "largest batch of the engine", "workspace_mb": "builder workspace"},
        description="TensorRT engine on a CUDA GPU; auto = as exported (f16 for a checkpoint)",
    )
)
