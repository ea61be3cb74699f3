"""flowclas-export --fp16: the backbone in float16 inside the ONNX, norm / flow / scoring float32 (17.4)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tiny_checkpoints import tiny_checkpoint, tiny_export

from flowclas_ros.export.fp16 import BACKBONE_PREFIX, KEY_PRECISION, backbone_nodes, float16_node_count
from flowclas_ros.model.export_meta import INPUT_NAME, read_onnx_props
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend
from flowclas_ros.runtime.tensorrt_builder import EngineBuildError, onnx_precision, require_precision


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fp16")
    checkpoint = tiny_checkpoint(
        tmp / "ckpt", input_size=(28, 42), kind="likelihood", proj_dim=16, perturb=0.02, threshold=0.5
    )
    return {
        "fp32": tiny_export(checkpoint, tmp / "m.onnx", "--dynamic-batch"),
        "fp16": tiny_export(checkpoint, tmp / "m_fp16.onnx", "--dynamic-batch", "--fp16"),
    }


def _output_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}


def test_backbone_is_float16_and_the_rest_float32(exported):
    half = onnx.load(str(exported["fp16"]))
    full = onnx.load(str(exported["fp32"]))
    assert read_onnx_props(exported["fp16"])[KEY_PRECISION] == "fp16"
    assert onnx_precision(exported["fp16"]) == "fp16" and onnx_precision(exported["fp32"]) == "fp32"
    assert float16_node_count(full) == 0 and float16_node_count(half) > 0
    # I/O stay float32: the backends feed and read float32 either way.
    for value in (*half.graph.input, *half.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = _output_types(half)
    inside = backbone_nodes(half.graph)
    matmuls = [n for n in half.graph.node if n.op_type == "MatMul"]
    backbone_mm = [n for n in matmuls if n.name.startswith(BACKBONE_PREFIX)]
    other = [n for n in half.graph.node if n.name not in inside and n.op_type not in ("Cast",)]
    assert backbone_mm and all(types.get(n.output[0]) == onnx.TensorProto.FLOAT16 for n in backbone_mm)
    flow_float = [n for n in other if n.output[0] in types and n.name.startswith("/flow")]
    assert flow_float, "the flow's nodes are there"
    assert all(types[n.output[0]] != onnx.TensorProto.FLOAT16 for n in flow_float)


def test_fp16_graph_runs_and_stays_close_to_fp32(exported):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (28, 42, 3), dtype=np.uint8) for _ in range(3)]
    with (
        OnnxRuntimeBackend(exported["fp32"], intra_op_threads=1) as full,
        OnnxRuntimeBackend(exported["fp16"], intra_op_threads=1) as half,
    ):
        want = np.stack([p.score_map for p in full.predict(images)])
        got = np.stack([p.score_map for p in half.predict(images)])
    assert np.isfinite(got).all()
    diff = np.abs(got - want).max()
    assert diff <= 0.05 * (want.max() - want.min()) + 2e-3 * max(1.0, np.abs(want).max()), diff
    session = ort.InferenceSession(str(exported["fp16"]), providers=["CPUExecutionProvider"])
    assert session.run(None, {INPUT_NAME: np.zeros((2, 3, 28, 42), np.float32)})[0].dtype == np.float32


def test_engine_precision_must_match_the_onnx(exported):
    """Strongly typed: the builder cannot change types, so a mismatched request is refused in one line."""
    require_precision(exported["fp16"], "fp16")
    require_precision(exported["fp32"], "fp32")
    with pytest.raises(EngineBuildError, match="computes in fp32, not fp16.*export it with --fp16$"):
        require_precision(exported["fp32"], "fp16")
    with pytest.raises(EngineBuildError, match="computes in fp16, not fp32"):
        require_precision(exported["fp16"], "fp32")
