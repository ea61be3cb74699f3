"""Reduced-precision exports for OpenVINO: f32 parity, bf16 and int8 (NNCF PTQ), each AP-gated.

``flowclas-export --format openvino --precision P`` writes one ONNX file:

- ``f32``: the verified export, plus an OpenVINO-f32-vs-torch parity check
  (same tolerance as the ONNX Runtime one, :mod:`flowclas_ros.export.verify`).
- ``bf16``: the same fp32 graph (bf16 is OpenVINO's ``INFERENCE_PRECISION_HINT``),
  with a passed AP gate recorded in its metadata.
- ``int8``: NNCF post-training quantisation of the ONNX graph (QDQ nodes;
  OpenVINO runs them as int8 VNNI / AMX kernels), calibrated on N training
  images. Only the backbone is quantised: the flow's log-likelihood and the
  scoring stay in float, as with TensorRT fp16.
- ``auto`` (the default): bf16 if this CPU runs it natively and it passes the gate, else int8
  if it passes (with ``--calib-data``), else f32; the choice and why are printed and written to
  the metadata (``flowclas.precision_choice``), and the OpenVINO backend's ``auto`` reads them back.

The gate: pixel AP on an evaluation folder (``--gate-data``), ONNX Runtime fp32
against the candidate backend; ``|AP - AP_fp32| <= AP_TOLERANCE`` or the export
is not written. The fp32 run fixes the histogram range that both runs use, so
the two APs are computed on the same bins.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.data.images.transforms import to_model_input
from flowclas_ros.evaluation.accumulator import EvalAccumulator
from flowclas_ros.evaluation.frames import FolderFrames
from flowclas_ros.model.config import PreprocessConfig
from flowclas_ros.model.export_meta import INPUT_NAME, KEY_PRECISION, KEY_QUALITY, KEY_VERIFY, read_onnx_props
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.cpu import (
    cpu_info,
    native_precisions,
    openvino_capabilities,
    unsupported_precision_message,
)

logger = logging.getLogger(__name__)

KEY_PRECISION_CHOICE = "flowclas.precision_choice"
"""Metadata key of ``--precision auto``'s record: asked, chosen, reason, CPU, what was tried."""

AP_TOLERANCE = 0.005
"""Largest allowed |pixel AP - pixel AP at fp32| for a reduced precision (issue 17)."""


class QualityGateError(RuntimeError):
    """A reduced-precision export lost more pixel AP than :data:`AP_TOLERANCE`; nothing was written."""


def pixel_ap(
    backend: InferenceBackend, root: str | Path, score_range: tuple[float, float] | None, limit: int | None
) -> tuple[float, tuple[float, float]]:
    """Pixel AP of ``backend`` on a folder dataset, and the histogram range it used.

    Raises:
        QualityGateError: The folder has no labelled anomaly pixel (AP undefined).
    """
    frames = FolderFrames(root)
    acc = EvalAccumulator(score_kind=backend.config.score.kind, score_range=score_range)
    for i, frame in enumerate(frames):
        if limit is not None and i >= limit:
            break
        pred = backend.predict([frame.image])[0]
        acc.add(frame.name, frame.image, frame.mask, pred.score_map, pred.image_score)
    ap = acc.pixel_results().get("ap")
    if ap is None or acc.pixel is None or acc.pixel.range is None:
        raise QualityGateError(f"--gate-data {root}: no labelled anomaly pixels; pixel AP is undefined")
    return float(ap), tuple(acc.pixel.range)


def gate(
    reference: InferenceBackend,
    candidate: InferenceBackend,
    label: str,
    root: str | Path,
    limit: int | None = None,
) -> dict[str, Any]:
    """Measures the AP gate of ``candidate`` against the fp32 ``reference``.

    Returns:
        ``{"passed", "ap", "ap_fp32", "delta", "tolerance", "data", "n_frames", "seconds"}``.

    Raises:
        QualityGateError: |ΔAP| above :data:`AP_TOLERANCE` (the message has both APs).
    """
    start = time.perf_counter()
    ap_ref, score_range = pixel_ap(reference, root, None, limit)
    ap, _ = pixel_ap(candidate, root, score_range, limit)
    delta = ap - ap_ref
    n_frames = min(len(FolderFrames(root)), limit or 1 << 30)
    result = {
        "passed": abs(delta) <= AP_TOLERANCE,
        "ap": round(ap, 6),
        "ap_fp32": round(ap_ref, 6),
        "delta": round(delta, 6),
        "tolerance": AP_TOLERANCE,
        "data": str(root),
        "n_frames": n_frames,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if not result["passed"]:
        raise QualityGateError(
            f"{label} fails the quality gate: pixel AP {ap:.4f} vs {ap_ref:.4f} at fp32 (|ΔAP| "
            f"{abs(delta):.4f} > {AP_TOLERANCE}) on {n_frames} frames of {root}; export not written"
        )
    return result


def passed_line(label: str, result: dict[str, Any]) -> str:
    """The export report's line for a passed :func:`gate` result."""
    return (
        f"quality gate {label}: pixel AP {result['ap']:.4f} vs fp32 {result['ap_fp32']:.4f} "
        f"(|ΔAP| {abs(result['delta']):.4f} <= {AP_TOLERANCE}) on {result['n_frames']} frames: passed"
    )


@contextlib.contextmanager
def backend_warnings_off(logger_name: str) -> Iterator[None]:
    """Silences a backend's "precision not AP-gated" warning while the gate itself runs it."""
    backend_logger = logging.getLogger(logger_name)
    level = backend_logger.level
    backend_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        backend_logger.setLevel(level)


def calibration_batches(root: str | Path, preprocess: PreprocessConfig, n: int) -> list[np.ndarray]:
    """``n`` training images spread evenly over the sorted folder, preprocessed as the runtime does.

    Raises:
        ValueError: No images, or ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"--calib-n must be >= 1, got {n}")
    dataset = FolderDataset(Path(root))
    if len(dataset) == 0:
        raise ValueError(f"--calib-data {root}: no images")
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int))
    return [to_model_input([dataset.load_image(int(i))], preprocess) for i in picks]


def quantize_int8(model: onnx.ModelProto, batches: list[np.ndarray]) -> onnx.ModelProto:
    """NNCF post-training int8 quantisation of the backbone of an exported graph (QDQ ONNX).

    NNCF rather than hand-written calibration: it places Q/DQ pairs where OpenVINO's
    low-precision transformations fuse them into int8 kernels, and applies SmoothQuant /
    bias correction for transformers.
    """
    import nncf

    nncf.set_log_level(logging.WARNING)  # one INFO line per skipped node otherwise
    float_nodes = [node.name for node in model.graph.node if not node.name.startswith("/backbone/")]
    return nncf.quantize(
        model,
        nncf.Dataset(batches, lambda x: {INPUT_NAME: x}),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
        ignored_scope=nncf.IgnoredScope(names=float_nodes, validate=False),
    )


def openvino_parity(onnx_path: Path, reference_fn: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray):
    """OpenVINO f32 on CPU against the torch reference (same rule as the ONNX Runtime check).

    Raises:
        ExportVerificationError: Difference above tolerance.
    """
    import openvino as ov

    from flowclas_ros.export.verify import RELATIVE_TOLERANCE, ExportVerificationError, compare

    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([compiled({0: x[None]})[0] for x in inputs], axis=0)
    result = compare(reference_fn(inputs), got)
    if result.max_abs_diff > result.tolerance:
        raise ExportVerificationError(
            f"OpenVINO f32 differs from torch by {result.max_abs_diff:.3g} (max abs) over {result.n_inputs} "
            f"inputs; allowed {result.tolerance:.3g} (= {RELATIVE_TOLERANCE:g} x score range)"
        )
    return result


def set_props(model: onnx.ModelProto, updates: dict[str, str]) -> None:
    """Replaces / adds ``metadata_props`` entries in place."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update(updates)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)


def metadata_updates(
    onnx_path: Path, precision: str, quality: dict[str, Any], ov_parity: dict[str, Any]
) -> dict[str, str]:
    """The metadata entries a reduced-precision export adds to those of its fp32 export."""
    props = read_onnx_props(onnx_path)
    verification = json.loads(props.get(KEY_VERIFY, "{}"))
    verification["openvino_f32"] = ov_parity
    return {
        KEY_VERIFY: json.dumps(verification, sort_keys=True),
        KEY_PRECISION: precision,
        KEY_QUALITY: json.dumps(quality, sort_keys=True),
    }


def export_openvino(args: Any, print_onnx: Callable[[Any], None]) -> dict[str, Any]:
    """``flowclas-export --format openvino``: export, parity-check, quantise / gate, then write ``args.out``.

    Args:
        args: The parsed CLI arguments (checkpoint, out, input_size, dynamic_batch, precision,
            calib_data, calib_n, gate_data, gate_n).
        print_onnx: Prints the fp32 export report.

    Returns:
        The quality-gate results by precision (empty for f32).

    Raises:
        QualityGateError: The reduced precision lost too much AP (nothing written).
        ExportVerificationError: OpenVINO f32 does not reproduce torch.
    """
    import os
    import tempfile

    from flowclas_ros.export.onnx_export import export_onnx
    from flowclas_ros.export.verify import torch_reference, verification_inputs
    from flowclas_ros.model.checkpoint import load_checkpoint
    from flowclas_ros.model.checkpoint_meta import with_input_size

    if args.precision == "bf16" and "BF16" not in (openvino_capabilities() or ()):
        raise ValueError(unsupported_precision_message("bf16"))  # before minutes of export and gate
    loaded = load_checkpoint(args.checkpoint, "cpu")
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="flowclas_ov_") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        report = export_onnx(
            loaded, fp32, input_size=args.input_size, dynamic_batch=args.dynamic_batch, progress=True
        )
        print_onnx(report)
        preprocess = with_input_size(loaded.config, report.input_size).preprocess
        inputs = verification_inputs(preprocess)
        parity = openvino_parity(fp32, lambda x: torch_reference(loaded.model, x), inputs).to_dict()
        print(
            f"OpenVINO f32 vs torch: max abs diff {parity['max_abs_diff']:.3g}, "
            f"relative {parity['relative_diff']:.2g} (limit 1e-3)"
        )
        reduce = ReducedExport(args, fp32, Path(tmp), preprocess)
        if args.precision == "auto":
            precision, proto, quality, choice = auto_export(reduce, args)
            print(f"precision auto -> {precision}: {choice['reason']}")
        else:
            precision, choice = args.precision, {}
            proto, quality = reduce.run(precision)
        graph_precision = "int8" if precision == "int8" else "fp32"
        set_props(proto, metadata_updates(fp32, graph_precision, quality, parity))
        if choice:
            set_props(proto, {KEY_PRECISION_CHOICE: json.dumps(choice, sort_keys=True)})
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            onnx.save(proto, str(staged))
            os.replace(staged, out)
        finally:
            staged.unlink(missing_ok=True)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) for OpenVINO {precision}")
    return quality


class ReducedExport:
    """One candidate precision of an OpenVINO export: quantise (int8), then the AP gate."""

    def __init__(self, args: Any, fp32: Path, tmp: Path, preprocess: PreprocessConfig):
        self.args, self.fp32, self.tmp, self.preprocess = args, fp32, tmp, preprocess

    def run(self, precision: str) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """The graph to write for ``precision`` and its passed gate (``{}`` for f32).

        Raises:
            QualityGateError: The gate failed.
        """
        from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend
        from flowclas_ros.runtime.openvino_backend import OpenVINOBackend

        args = self.args
        proto = onnx.load(str(self.fp32))
        if precision == "f32":
            return proto, {}
        candidate = self.fp32
        if precision == "int8":
            start = time.perf_counter()
            proto = quantize_int8(proto, calibration_batches(args.calib_data, self.preprocess, args.calib_n))
            set_props(proto, {KEY_PRECISION: "int8"})
            candidate = self.tmp / "int8.onnx"
            onnx.save(proto, str(candidate))
            print(
                f"int8: NNCF calibration on {args.calib_n} images of {args.calib_data}, "
                f"{time.perf_counter() - start:.0f} s"
            )
        with (
            backend_warnings_off("flowclas_ros.runtime.openvino_backend"),  # this is the gate
            OnnxRuntimeBackend(self.fp32) as ref,
            OpenVINOBackend(candidate, precision=precision) as cand,
        ):
            result = gate(ref, cand, f"OpenVINO {precision}", args.gate_data, args.gate_n)
        print(passed_line(precision, result))
        return proto, {precision: result}


def auto_export(reduce: ReducedExport, args: Any) -> tuple[str, onnx.ModelProto, dict[str, Any], dict]:
    """``--precision auto``: the first of bf16, int8, f32 this CPU runs natively that passes the AP gate.

    int8 needs ``--calib-data``; every reduced precision needs ``--gate-data``.

    Returns:
        (chosen precision, graph, passed gates, the choice record written to the metadata:
        ``{"asked", "chosen", "reason", "cpu", "tried"}``).
    """
    native = native_precisions()
    tried: dict[str, str] = {}
    order = [("bf16", None), ("int8", None if args.calib_data is not None else "no --calib-data")]
    for precision, missing in order:
        if precision not in native:
            tried[precision] = f"not native on this CPU (runs {', '.join(native)})"
        elif args.gate_data is None:
            tried[precision] = "no --gate-data to gate it"
        elif missing:
            tried[precision] = missing
        else:
            try:
                proto, quality = reduce.run(precision)
            except QualityGateError as err:
                tried[precision] = str(err).replace("; export not written", "")
                print(f"auto: {tried[precision]}")
                continue
            gate_line = f"|ΔAP| {abs(quality[precision]['delta']):.4f} <= {AP_TOLERANCE}"
            reason = f"{precision} runs natively and passed the AP gate ({gate_line})"
            if tried:
                reason += "; " + "; ".join(f"{p}: {why}" for p, why in tried.items())
            return precision, proto, quality, _choice(precision, reason, tried)
    proto, _ = reduce.run("f32")
    reason = "f32: " + "; ".join(f"{p}: {why}" for p, why in tried.items())
    return "f32", proto, {}, _choice("f32", reason, tried)


def _choice(chosen: str, reason: str, tried: dict[str, str]) -> dict[str, Any]:
    return {"asked": "auto", "chosen": chosen, "reason": reason, "cpu": cpu_info().summary(), "tried": tried}
