"""``flowclas-export --format engine``: ONNX export, strongly typed TensorRT build, AP gate, then write.

Everything is staged in a hidden temporary folder beside ``--out`` and moved into place
only at the end (ONNX first, then the engine and its ``.json`` sidecar, each atomically),
so a failed export, build or gate leaves nothing at ``--out`` or beside it.

The gate (:func:`flowclas_ros.export.reduced.gate`, the one OpenVINO bf16 / int8 use):
pixel AP of the built engine, run by the TensorRT backend, on ``--gate-data`` against
ONNX Runtime fp32 on the fp32 export of the same checkpoint; ``|ΔAP| <= 0.005`` or exit 1
with both APs. It runs when ``--gate-data`` is given; an ``--fp16`` engine without it is
written ungated with a warning (DESIGN.md's ``--format engine --fp16`` predates the gate),
and for fp32 engines it is optional (TensorRT may still pick TF32 kernels on Ampere and
later GPUs). A passed gate is stored in the sidecar's metadata under
``flowclas.quality_gate``; the TensorRT backend warns about an fp16 engine without one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.export.reduced import backend_warnings_off, gate, passed_line
from flowclas_ros.model.export_meta import KEY_QUALITY, read_onnx_props
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.engine_cache import EngineRecord, sidecar_path, write_engine

TENSORRT_LOGGER = "flowclas_ros.runtime.tensorrt_backend"


@dataclass
class StagedEngine:
    """A built engine waiting for its gate: the staged ONNX it came from, its bytes and sidecar record.

    Attributes:
        onnx: The staged ONNX the engine was built from (moved beside ``--out`` when published).
        engine: The serialized engine.
        record: Its sidecar record (key, export metadata, build facts).
        reference: The fp32 ONNX export the gate compares with (None: no gate asked for).
    """

    onnx: Path
    engine: bytes
    record: EngineRecord
    reference: Path | None


def gate_then_publish(
    staged: StagedEngine,
    candidate: Callable[[], InferenceBackend],
    out: Path,
    *,
    gate_data: Path | None,
    gate_n: int | None,
) -> dict[str, Any]:
    """Gates the staged engine (when a reference is set) and only then writes it to ``out``.

    Args:
        staged: The build to publish.
        candidate: Opens the backend that runs the staged engine (the TensorRT backend on it).
        out: Engine path; the ONNX goes to ``out`` with suffix ``.onnx``, the sidecar to ``out.json``.
        gate_data: Labelled folder dataset of the gate (required when ``staged.reference`` is set).
        gate_n: Only the first N frames of ``gate_data``.

    Returns:
        The gate results by precision (empty when not gated).

    Raises:
        QualityGateError: |ΔAP| above the tolerance; nothing is written.
    """
    precision = staged.record.key.precision
    quality: dict[str, Any] = {}
    if staged.reference is not None:
        from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend

        with (
            backend_warnings_off(TENSORRT_LOGGER),  # its "not gated" warning: this is the gate
            OnnxRuntimeBackend(staged.reference) as ref,
            candidate() as cand,
        ):
            quality[precision] = gate(ref, cand, f"TensorRT {precision}", gate_data, gate_n)
        print(passed_line(f"TensorRT {precision}", quality[precision]))
        staged.record.metadata[KEY_QUALITY] = json.dumps(quality, sort_keys=True)
    onnx_out = out.with_suffix(".onnx")
    onnx_out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.onnx, onnx_out)
    staged.record.onnx_path = str(onnx_out)
    write_engine(out, staged.engine, staged.record)
    return quality


def export_engine(args: Any, precision: str, print_onnx: Callable[[Any], None]) -> dict[str, Any]:
    """``flowclas-export --format engine``: export, build, gate (``--gate-data``), then write ``args.out``.

    Args:
        args: The parsed CLI arguments (checkpoint, out, input_size, dynamic_batch, max_batch,
            workspace_mb, version_compatible, device, gate_data, gate_n).
        precision: ``fp32``, ``fp16`` (``--fp16``) or ``fp16-all`` (``--fp16 --fp16-flow``).
        print_onnx: Prints an ONNX export report.

    Returns:
        The gate results by precision (empty when not gated).

    Raises:
        TensorRTUnavailableError: No TensorRT, CUDA bindings or GPU (before the long export).
        EngineBuildError: TensorRT cannot parse or build.
        QualityGateError: The engine lost too much pixel AP (nothing written).
    """
    from flowclas_ros.export.onnx_export import export_onnx
    from flowclas_ros.model.checkpoint import load_checkpoint
    from flowclas_ros.runtime.tensorrt_backend import TensorRTBackend
    from flowclas_ros.runtime.tensorrt_builder import (
        build_serialized_engine,
        cuda_device,
        engine_key_here,
        import_tensorrt,
    )

    trt = import_tensorrt()  # fail before the long ONNX export
    device = cuda_device(args.device)
    max_batch = (args.max_batch or 4) if args.dynamic_batch else 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(args.checkpoint, "cpu")
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        export = {"input_size": args.input_size, "dynamic_batch": args.dynamic_batch, "progress": True}
        staged_onnx = Path(tmp) / out.with_suffix(".onnx").name
        report = export_onnx(loaded, staged_onnx, precision=precision, **export)
        print_onnx(report)
        reference = None
        if args.gate_data is not None:
            reference = staged_onnx
            if precision != "fp32":  # its own folder: no name clash with the staged files
                reference = Path(tmp) / "reference" / "fp32.onnx"
                reference.parent.mkdir()
                print_onnx(export_onnx(loaded, reference, **export))
        options = {
            "precision": precision,
            "max_batch": max_batch,
            "opt_batch": max_batch,
            "version_compatible": args.version_compatible,
        }
        key = engine_key_here(staged_onnx, device, input_size=report.input_size, **options)
        print(f"building TensorRT {trt.__version__} engine for compute capability {key.compute_capability}")
        start = time.perf_counter()
        engine = build_serialized_engine(
            staged_onnx, input_size=report.input_size, workspace_mb=args.workspace_mb, **options
        )
        record = EngineRecord.built(key, read_onnx_props(staged_onnx), start)
        staged_engine = write_engine(Path(tmp) / out.name, engine, record)  # what the gate loads
        staged = StagedEngine(staged_onnx, engine, record, reference)
        quality = gate_then_publish(
            staged,
            lambda: TensorRTBackend(staged_engine, device=str(device)),
            out,
            gate_data=args.gate_data,
            gate_n=args.gate_n,
        )
    size = len(engine) / 2**20
    print(f"wrote {out} ({size:.1f} MiB), its key {sidecar_path(out)} and {out.with_suffix('.onnx')}")
    return quality
