"""ONNX Runtime inference backend, and where a torch-free backend finds a checkpoint's ONNX file.

ONNX Runtime runs on the CPU by default, with CUDA when asked for and present.

Nothing here imports torch or :mod:`flowclas_ros.export`: a checkpoint that has no export
in the cache yet is exported by running ``flowclas-export`` in a child process (which
needs torch); an exported ``.onnx`` runs without it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.model.checkpoint_meta import CheckpointIdentity, format_size, read_checkpoint_identity
from flowclas_ros.model.export_meta import INPUT_NAME, ModelMismatchError, check_matches, parse_metadata
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.engine_cache import onnx_cache_path
from flowclas_ros.runtime.threads import resolve_threads

logger = logging.getLogger(__name__)

GRAPH_OPTIMIZATION = ("all", "extended", "basic", "disable")


def session_options(
    intra_op_threads: int | str | None = None,
    inter_op_threads: int | None = 1,
    graph_optimization: str = "all",
    allow_spinning: bool = False,
):
    """ONNX Runtime session options used by the backend (and the benchmark).

    Args:
        intra_op_threads: Threads inside one operator: ``auto`` / None -> the CPUs this process may
            use (``os.sched_getaffinity``; ORT's own default counts the machine's physical cores,
            ignoring a container's limit). See :mod:`flowclas_ros.runtime.threads`.
        inter_op_threads: Threads across operators (default 1); only used by the parallel
            executor, so > 1 switches to it (the sequential executor is faster for this
            chain-like graph). None leaves ORT's default.
        graph_optimization: ``all`` (incl. layout / fusions), ``extended``, ``basic`` or ``disable``.
        allow_spinning: Let idle pool threads busy-wait for the next op. Off by default: a robot
            shares its CPU with other nodes, and on a loaded 2-core machine spinning made the
            forward 1.3x slower (benchmarks/backends.py); on an idle, dedicated CPU it can save a little.
    """
    import onnxruntime as ort

    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if graph_optimization not in levels:
        raise ValueError(
            f"graph_optimization must be one of {GRAPH_OPTIMIZATION}, got {graph_optimization!r}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[graph_optimization]
    parallel = inter_op_threads is not None and inter_op_threads > 1
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = resolve_threads(intra_op_threads)
    if inter_op_threads is not None:
        options.inter_op_num_threads = int(inter_op_threads)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
    options.enable_mem_pattern = True  # fixed shapes: plan the activation memory once
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3  # errors only
    return options


def execution_providers(device: str) -> tuple[list[Any], str]:
    """Providers for a device string, and the device actually used.

    ``cuda[:N]`` selects the CUDA execution provider when this onnxruntime has it;
    otherwise a warning is logged and the CPU provider is used.
    """
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if kind != "cuda":
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        logger.warning(
            "device %s requested but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu); running on the CPU",
            device,
        )
        return ["CPUExecutionProvider"], "cpu"
    device_id = int(index or 0)
    return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"], f"cuda:{device_id}"


def export_in_child(
    checkpoint: Path,
    target: Path,
    input_size: tuple[int, int] | None,
    dynamic_batch: bool,
    precision: str = "fp32",
) -> None:
    """Runs ``flowclas-export --format onnx`` for ``checkpoint`` in a child Python (torch stays out of here).

    Raises:
        ModelMismatchError: This install has no torch (export elsewhere and pass the ``.onnx``),
            or the export failed (its one-line error).
    """
    if importlib.util.find_spec("torch") is None:
        raise ModelMismatchError(
            f"{checkpoint}: no ONNX export of this checkpoint in the cache ({target}) and this install has "
            "no torch to make one; run `flowclas-export --checkpoint CKPT --format onnx --out FILE.onnx` "
            "where the [export] extra is installed and pass FILE.onnx as the checkpoint"
        )
    command = [sys.executable, "-m", "flowclas_ros.export", "--checkpoint", str(checkpoint)]
    command += ["--format", "onnx", "--out", str(target)]
    if input_size is not None:
        command += ["--input-size", str(int(input_size[0])), str(int(input_size[1]))]
    if dynamic_batch:
        command.append("--dynamic-batch")
    command += {"fp32": [], "fp16": ["--fp16"], "fp16-all": ["--fp16", "--fp16-flow"]}[precision]
    package_root = str(Path(__file__).resolve().parents[2])  # this flowclas_ros, not another install
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]))
    logger.info("exporting %s to %s (first use; verified against torch)", checkpoint, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise ModelMismatchError(f"{checkpoint}: export failed: {lines[-1] if lines else done.returncode}")


def resolve_onnx_source(
    checkpoint: str | Path | Any,
    onnx_path: str | Path | None,
    *,
    input_size: tuple[int, int] | None,
    dynamic_batch: bool,
    cache_dir: str | Path | None,
    precision: str = "fp32",
) -> tuple[Path, CheckpointIdentity | None]:
    """The ONNX file a backend runs, and the checkpoint identity it must match (None for a bare .onnx).

    ``checkpoint`` is an exported ``.onnx`` itself, or a checkpoint directory (or an object
    with its ``.path``, e.g. a ``LoadedCheckpoint``): then ``onnx_path`` names its export, or
    the cached export is used, made on first use by :func:`export_in_child`.
    """
    source = Path(getattr(checkpoint, "path", checkpoint))
    if source.suffix == ".onnx":
        if onnx_path is not None and Path(onnx_path) != source:
            raise ValueError(f"two ONNX files given: {source} and onnx_path={onnx_path}")
        return source, None
    identity = read_checkpoint_identity(source)
    if onnx_path is None:
        size = tuple(input_size or identity.config.preprocess.input_size)
        onnx_path = onnx_cache_path(cache_dir, identity.sha256, size, dynamic_batch, precision)
        if not onnx_path.is_file():  # precision: fp16 for TensorRT (float16 backbone in the graph)
            export_in_child(source, onnx_path, size, dynamic_batch, precision)
    return Path(onnx_path), identity


class OnnxRuntimeBackend(InferenceBackend):
    """Runs a ``flowclas-export`` ONNX model with ONNX Runtime.

    Args:
        checkpoint: Checkpoint directory, ``LoadedCheckpoint``, or an exported ``.onnx``
            (then config and threshold come from its metadata).
        device: ``cpu`` (default), ``cuda`` or ``cuda:N`` (CUDA execution provider if available).
        onnx_path: Exported model to run; None exports the checkpoint into the cache on first use.
        input_size: (H, W) expected; default the checkpoint config's ``preprocess.input_size``.
        intra_op_threads: ORT intra-op threads (``auto`` / None: the usable CPUs).
        inter_op_threads: ORT inter-op threads (default 1; > 1 enables the parallel executor).
        graph_optimization: ``all``, ``extended``, ``basic`` or ``disable``.
        allow_spinning: Busy-wait between ops (see :func:`session_options`); off by default.
        providers: Explicit ORT providers list (overrides ``device``).
        dynamic_batch: When exporting into the cache, make the batch axis dynamic.
        cache_dir: Cache root (default ``$FLOWCLAS_CACHE_DIR`` or ``~/.cache/flowclas_ros``).

    Raises:
        ModelMismatchError: The ONNX file belongs to another checkpoint or input size.
    """

    name = "onnxruntime"

    def __init__(
        self,
        checkpoint: str | Path | Any,
        device: str = "cpu",
        *,
        onnx_path: str | Path | None = None,
        input_size: tuple[int, int] | None = None,
        intra_op_threads: int | str | None = None,
        inter_op_threads: int | None = 1,
        graph_optimization: str = "all",
        allow_spinning: bool = False,
        providers: list[Any] | None = None,
        dynamic_batch: bool = False,
        cache_dir: str | Path | None = None,
    ):
        import onnxruntime as ort

        onnx_path, identity = resolve_onnx_source(
            checkpoint, onnx_path, input_size=input_size, dynamic_batch=dynamic_batch, cache_dir=cache_dir
        )
        if providers is None:
            providers, device = execution_providers(device)
        options = session_options(intra_op_threads, inter_op_threads, graph_optimization, allow_spinning)
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ModelMismatchError(f"{self.onnx_path}: ONNX file not found")
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=providers)
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, self.onnx_path)
        check_matches(meta, identity, input_size)
        self._check_graph_input(meta.input_size)
        super().__init__(meta.identity.config, meta.identity.threshold, device, meta.identity.image_threshold)
        self.providers = self.session.get_providers()

    def _check_graph_input(self, input_size: tuple[int, int]) -> None:
        """The graph's real input must agree with its metadata (catches hand-edited files)."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ModelMismatchError(f"{self.onnx_path}: expected one input named {INPUT_NAME!r}")
        shape = inputs[0].shape
        if len(shape) != 4 or tuple(shape[1:]) != (3, *input_size):
            raise ModelMismatchError(
                f"{self.onnx_path}: graph input {shape} disagrees with its metadata size "
                f"{format_size(input_size)}"
            )
        self._fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("OnnxRuntimeBackend is closed")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self._fixed_batch
        if step is None or batch.shape[0] == step:
            return self.session.run(None, {INPUT_NAME: batch})[0]
        parts = [self._run_padded(batch[i : i + step], step) for i in range(0, len(batch), step)]
        return np.concatenate(parts, axis=0)

    def _run_padded(self, chunk: np.ndarray, size: int) -> np.ndarray:
        """Runs a chunk on a fixed-batch graph; a short (last) chunk is zero-padded, the padding dropped."""
        count = chunk.shape[0]
        if count < size:
            chunk = np.concatenate([chunk, np.zeros((size - count, *chunk.shape[1:]), chunk.dtype)])
        return self.session.run(None, {INPUT_NAME: chunk})[0][:count]

    def close(self) -> None:
        """Drops the ORT session."""
        self.session = None
