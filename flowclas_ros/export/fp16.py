"""Mixed-precision ONNX for strongly typed TensorRT: backbone in float16, norm / flow / scoring in float32.

TensorRT 11 builds only strongly typed networks: every tensor's type comes from the
ONNX graph, and builder flags (``BuilderFlag.FP16``) or per-layer precision
constraints no longer choose it. So the precision split that used to be requested
from the builder (reduced precision for the backbone only; the flow's
log-likelihoods are sensitive to it) is written into the graph here, once, and the
same graph builds on TensorRT 10.x and 11.x.

The conversion is ONNX Runtime's own ``onnxruntime.transformers.float16`` converter
(a maintained tool already installed with onnxruntime), with every node outside the
backbone on its block list. The exporter names nodes by module path (``/backbone/...``);
the unnamed-module nodes the constant folder leaves behind count as backbone when a
backbone node depends on them. Two fixes to the converter's output: it can add one
boundary Cast per consumer under the same name (identical nodes: kept once), and it
appends its Casts at the end, so the nodes are put back in topological order.
"""

from __future__ import annotations

from collections import defaultdict, deque

import onnx

from flowclas_ros.model.export_meta import KEY_PRECISION  # noqa: F401 - re-exported for callers

BACKBONE_PREFIX = "/backbone/"
# KEY_PRECISION values written here: ``fp16`` (backbone float16, the rest float32) or ``fp16-all``.


def backbone_nodes(graph: onnx.GraphProto) -> set[str]:
    """Names of the nodes that belong to the backbone: ``/backbone/...`` and their unprefixed producers."""
    producer = {out: node for node in graph.node for out in node.output}
    inside = {node.name for node in graph.node if node.name.startswith(BACKBONE_PREFIX)}
    queue = deque(node for node in graph.node if node.name in inside)
    while queue:
        for name in queue.popleft().input:
            node = producer.get(name)
            if node is not None and node.name not in inside and not node.name.startswith("/"):
                inside.add(node.name)
                queue.append(node)
    return inside


def _dedupe(graph: onnx.GraphProto) -> None:
    seen: dict[str, bytes] = {}
    kept = []
    for node in graph.node:
        body = node.SerializeToString()
        if node.name in seen:
            if seen[node.name] != body:
                raise ValueError(f"fp16 conversion made two different nodes named {node.name!r}")
            continue
        seen[node.name] = body
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Kahn's algorithm over tensor names (graph inputs and initializers are available at the start)."""
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    waiting = defaultdict(list)
    missing = []
    for index, node in enumerate(graph.node):
        need = {name for name in node.input if name not in available}
        missing.append(len(need))
        for name in need:
            waiting[name].append(index)
    ready = deque(i for i, count in enumerate(missing) if count == 0)
    order = []
    while ready:
        index = ready.popleft()
        order.append(graph.node[index])
        for name in graph.node[index].output:
            for consumer in waiting.pop(name, []):
                missing[consumer] -= 1
                if missing[consumer] == 0:
                    ready.append(consumer)
    if len(order) != len(graph.node):
        raise ValueError("fp16 conversion left a graph that is not a DAG")
    del graph.node[:]
    graph.node.extend(order)


def cast_backbone_fp16(model: onnx.ModelProto, *, whole_graph: bool = False) -> onnx.ModelProto:
    """The same graph with the backbone (or, ``whole_graph``, everything) computing in float16.

    Inputs and outputs stay float32, so callers and the engine's I/O do not change.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = set() if whole_graph else backbone_nodes(model.graph)
    block = None if whole_graph else [node.name for node in model.graph.node if node.name not in keep]
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
    _dedupe(converted.graph)
    _topological_sort(converted.graph)
    onnx.checker.check_model(converted)
    return converted


def float16_node_count(model: onnx.ModelProto) -> int:
    """How many nodes produce a float16 tensor (0 for a float32 graph): what a test or a builder checks."""
    typed = {value.name: value.type.tensor_type.elem_type for value in model.graph.value_info}
    half = onnx.TensorProto.FLOAT16
    count = 0
    for node in model.graph.node:
        to_half = node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute)
        if to_half or any(typed.get(out) == half for out in node.output):
            count += 1
    return count


FP16_RELATIVE_TOLERANCE = 5e-2
"""float16 backbone vs the float32 torch model: max abs diff allowed, as a fraction of the score range.
A sanity check that the graph is not broken; the quality gate is the AP check on real data."""

FP16_NOISE_FLOOR = 2e-3
"""Absolute floor (times max(1, max |score|)): float16 keeps ~3 significant digits."""


def verify_fp16(onnx_path: str, model, preprocess, *, dynamic_batch: bool):
    """Runs the mixed-precision file in ONNX Runtime (CPU) against the float32 torch model.

    Returns:
        :class:`~flowclas_ros.export.verify.VerificationResult` with the float16 tolerance.

    Raises:
        ExportVerificationError: Difference above the float16 tolerance, bad shape or non-finite output.
    """
    import dataclasses

    import numpy as np
    import onnxruntime as ort

    from flowclas_ros.export.verify import (
        ExportVerificationError,
        compare,
        torch_reference,
        verification_inputs,
    )
    from flowclas_ros.model.export_meta import INPUT_NAME

    inputs = verification_inputs(preprocess)
    reference = torch_reference(model, inputs)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    feed = [inputs] if dynamic_batch else [x[None] for x in inputs]
    got = np.concatenate([session.run(None, {INPUT_NAME: x})[0] for x in feed], axis=0)
    result = compare(reference, got)
    floor = FP16_NOISE_FLOOR * max(1.0, float(np.abs(reference).max()))
    result = dataclasses.replace(result, tolerance=max(FP16_RELATIVE_TOLERANCE * result.score_range, floor))
    if result.max_abs_diff > result.tolerance:
        raise ExportVerificationError(
            f"float16 backbone differs from torch float32 by {result.max_abs_diff:.3g} (max abs) over "
            f"{result.n_inputs} inputs; allowed {result.tolerance:.3g} "
            f"(= {FP16_RELATIVE_TOLERANCE:g} x score range {result.score_range:.3g})"
        )
    return result
