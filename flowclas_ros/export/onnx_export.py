"""Checkpoint -> verified ONNX file (opset 17, fixed input size, optional dynamic batch).

The graph is the method's ``forward`` (``AnomalyMethod.export_graph``): a normalised (B, 3, H, W) batch at the
export input size -> (B, H, W) score map at that size. Resizing and
normalisation stay outside, in ``InferenceBackend.predict``, shared by all
backends. DINOv2's per-call bicubic+antialias position-embedding resampling
does not export faithfully, so the table is precomputed for the padded size
(``backbone.fix_pos_embed``). The traced graph is then constant-folded by ONNX
Runtime's *basic* (standard-ops-only) optimiser, so every shape is static for
TensorRT, and checked against torch before it is moved into place.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from tqdm import tqdm

from flowclas_ros.export.verify import VerificationResult, verify_onnx
from flowclas_ros.model.checkpoint import LoadedCheckpoint, load_checkpoint
from flowclas_ros.model.checkpoint_meta import CheckpointIdentity, read_checkpoint_identity, with_input_size
from flowclas_ros.model.export_meta import INPUT_NAME, KEY_VERIFY, OUTPUT_NAME, build_metadata
from flowclas_ros.model.method import AnomalyMethod

logger = logging.getLogger(__name__)

OPSET = 17
PRECISIONS = ("fp32", "fp16", "fp16-all")
_PROTOBUF_LIMIT = 2**31 - 64 * 2**20  # single-file ONNX limit, with room for the graph itself


class ExportError(RuntimeError):
    """The model cannot be exported (bad input size, too large, the checkpoint changed on disk, ...)."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: The ONNX file.
        input_size: (height, width) the graph takes.
        padded_size: (height, width) after padding to the backbone stride.
        dynamic_batch: Whether the batch axis is dynamic.
        checkpoint_sha256: Hash of the source checkpoint.
        verification: The ORT-vs-torch check.
        seconds: Wall time of the whole export.
    """

    path: Path
    input_size: tuple[int, int]
    padded_size: tuple[int, int]
    dynamic_batch: bool
    checkpoint_sha256: str
    verification: VerificationResult
    seconds: float


def padded_size(model: AnomalyMethod, input_size: tuple[int, int]) -> tuple[int, int]:
    """``input_size`` rounded up to multiples of the backbone stride (what ``pad_input`` produces)."""
    step = model.pad_multiple
    return (-(-input_size[0] // step) * step, -(-input_size[1] // step) * step)


def _exporter_versions() -> dict[str, str]:
    import onnxruntime
    import timm

    from flowclas_ros import __version__

    return {
        "flowclas_ros": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,  # did the constant folding
        "opset": str(OPSET),
    }


def _trace(model: AnomalyMethod, input_size: tuple[int, int], path: Path, dynamic_batch: bool) -> None:
    """``torch.onnx.export`` (TorchScript tracer) of the method's export graph at ``input_size``."""
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with model.export_graph(input_size, padded_size(model, input_size)) as graph:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer / deprecation chatter; correctness is verified below
            torch.onnx.export(
                graph,
                (torch.zeros(1, 3, *input_size),),
                str(path),
                opset_version=OPSET,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=axes,
                do_constant_folding=True,
            )


def _fold_constants(raw: Path, folded: Path) -> onnx.ModelProto:
    """Constant-folds shape arithmetic with ONNX Runtime's basic level (standard ONNX ops only).

    Falls back to the traced graph if the optimiser introduced any non-standard op.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    # MatMulAddFusion adds unnamed reshapes; TensorRT fuses the bias itself, and node names must keep
    # their module path (the engine builder keeps the non-backbone layers in fp32 by name).
    ort.InferenceSession(
        str(raw), options, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"]
    )
    model = onnx.load(str(folded))
    if any(node.domain not in ("", "ai.onnx") for node in model.graph.node):
        logger.warning("constant folding produced non-standard ops; keeping the traced graph")
        return onnx.load(str(raw))
    used = {node.domain for node in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]  # ORT lists every domain it knows
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _set_static_output(model: onnx.ModelProto, input_size: tuple[int, int]) -> None:
    """Declares the output's (H, W); the tracer leaves them symbolic when the batch is dynamic."""
    dims = model.graph.output[0].type.tensor_type.shape.dim
    for dim, value in zip(list(dims)[1:], input_size):
        dim.Clear()
        dim.dim_value = value


def _load(checkpoint: str | Path | LoadedCheckpoint) -> tuple[LoadedCheckpoint, CheckpointIdentity]:
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint, "cpu")
    if next(loaded.model.parameters()).device.type != "cpu":
        raise ExportError("export_onnx needs the checkpoint's model on the CPU")
    identity = read_checkpoint_identity(loaded.path)
    if identity.sha256 != loaded.sha256:
        raise ExportError(f"{loaded.path}: checkpoint changed on disk since it was loaded; load it again")
    return loaded, identity


def export_onnx(
    checkpoint: str | Path | LoadedCheckpoint,
    out: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    dynamic_batch: bool = False,
    progress: bool = False,
    precision: str = "fp32",
) -> ExportReport:
    """Exports a checkpoint to a verified ONNX file.

    Args:
        checkpoint: Checkpoint directory or a loaded checkpoint (model on CPU).
        out: Target ``.onnx`` path. Written atomically, only after verification passed.
        input_size: (height, width) the graph takes; default the checkpoint's ``preprocess.input_size``.
        dynamic_batch: Make the batch axis dynamic (else fixed to 1).
        progress: Show a tqdm bar of the export steps on stderr.
        precision: ``fp32``; ``fp16`` casts the backbone to float16 in the graph (norm, flow and
            scoring stay float32: what a strongly typed TensorRT build runs); ``fp16-all`` casts
            everything. See :mod:`flowclas_ros.export.fp16`.

    Returns:
        The report (path, sizes, verification numbers).

    Raises:
        CheckpointError: The checkpoint cannot be loaded.
        ExportError: Invalid input size, model too large for one ONNX file.
        ExportVerificationError: ONNX Runtime does not reproduce torch within tolerance.
    """
    start = time.perf_counter()
    with tqdm(total=4, desc="load checkpoint", disable=not progress, unit="step", leave=False) as steps:
        loaded, identity = _load(checkpoint)
        model = loaded.model.eval()
        size = tuple(int(v) for v in (input_size or loaded.config.preprocess.input_size))
        if len(size) != 2 or min(size) < model.patch_size:
            raise ExportError(f"input size {size} must be two sides of at least {model.patch_size} pixels")
        param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        if param_bytes > _PROTOBUF_LIMIT:
            raise ExportError(
                f"model has {param_bytes / 2**30:.1f} GiB of weights; one ONNX file holds < 2 GiB"
            )
        if precision not in PRECISIONS:
            raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        steps.update()
        result = _export_verified(loaded, identity, size, Path(out), dynamic_batch, steps, precision)
    return ExportReport(
        Path(out),
        size,
        padded_size(model, size),
        dynamic_batch,
        identity.sha256,
        result,
        time.perf_counter() - start,
    )


def _export_verified(
    loaded: LoadedCheckpoint,
    identity: CheckpointIdentity,
    size: tuple[int, int],
    out: Path,
    dynamic_batch: bool,
    steps: tqdm,
    precision: str = "fp32",
) -> VerificationResult:
    """Trace, fold, check and verify in a temporary file; move it to ``out`` only when it passed."""
    model = loaded.model
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="flowclas_export_") as tmp:
        steps.set_description(f"trace {size[0]}x{size[1]}")
        _trace(model, size, Path(tmp) / "traced.onnx", dynamic_batch)
        steps.update()
        steps.set_description("fold constants")
        proto = _fold_constants(Path(tmp) / "traced.onnx", Path(tmp) / "folded.onnx")
        if dynamic_batch:
            _set_static_output(proto, size)
        try:
            onnx.save(proto, str(staged))
            onnx.checker.check_model(str(staged))
            steps.update()
            steps.set_description("verify vs torch")
            preprocess = with_input_size(loaded.config, size).preprocess
            result = verify_onnx(str(staged), model, preprocess, dynamic_batch=dynamic_batch)
            metadata = build_metadata(
                identity,
                size,
                dynamic_batch=dynamic_batch,
                verification=result.to_dict(),
                exporter=_exporter_versions(),
            )
            if precision != "fp32":
                proto, result = _to_fp16(proto, staged, loaded, preprocess, dynamic_batch, precision)
                metadata |= _fp16_metadata(precision, result)
            onnx.helper.set_model_props(proto, metadata)
            onnx.save(proto, str(staged))
            os.replace(staged, out)
        finally:
            staged.unlink(missing_ok=True)
        steps.update()
    return result


def _to_fp16(proto, staged: Path, loaded, preprocess, dynamic_batch: bool, precision: str):
    """The verified float32 graph -> float16 backbone (or all), checked against torch at fp16 tolerance."""
    from flowclas_ros.export.fp16 import cast_backbone_fp16, verify_fp16

    half = cast_backbone_fp16(proto, whole_graph=precision == "fp16-all")
    onnx.save(half, str(staged))
    return half, verify_fp16(str(staged), loaded.model, preprocess, dynamic_batch=dynamic_batch)


def _fp16_metadata(precision: str, result: VerificationResult) -> dict[str, str]:
    from flowclas_ros.export.fp16 import KEY_PRECISION

    return {KEY_PRECISION: precision, KEY_VERIFY: json.dumps(result.to_dict(), sort_keys=True)}
