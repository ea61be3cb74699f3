from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.export import ExportVerificationError, export_onnx, main
from flowclas_ros.export.verify import compare, verification_inputs, verify_onnx
from flowclas_ros.model import PreprocessConfig, load_checkpoint
from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity
from flowclas_ros.model.export_meta import (
    KEY_CONFIG,
    KEY_INPUT_SIZE,
    KEY_SHA256,
    ModelMismatchError,
    read_onnx_metadata,
)
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend

torch.set_num_threads(1)


def make_checkpoint(path, seed: int = 0):
    """The tiny model with the likelihood score (what the export verifies); ``seed``: another model."""
    return tiny_checkpoint(path, threshold=0.25, kind="likelihood", proj_dim=16, perturb=0.02, seed=seed)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("export") / "ckpt")


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """Static 56x56 export through the CLI."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def exported_dynamic(checkpoint, tmp_path_factory):
    """Dynamic-batch export at an input size other than the checkpoint's (42x70)."""
    out = tmp_path_factory.mktemp("onnx_dyn") / "model_dyn.onnx"
    return export_onnx(checkpoint, out, input_size=(42, 70), dynamic_batch=True)


def _static_dims(value_info) -> bool:
    return all(d.HasField("dim_value") and d.dim_value > 0 for d in value_info.type.tensor_type.shape.dim)


def test_export_is_valid_static_opset17_and_carries_metadata(checkpoint, exported):
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 56, 56]
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [1, 56, 56]
    assert inferred.graph.value_info and all(_static_dims(v) for v in inferred.graph.value_info)
    assert not any(node.op_type == "Shape" for node in proto.graph.node)  # shape arithmetic folded
    props = {p.key: p.value for p in proto.metadata_props}
    loaded = load_checkpoint(checkpoint)
    assert props[KEY_SHA256] == loaded.sha256 == read_checkpoint_identity(checkpoint).sha256
    assert props[KEY_CONFIG] == (checkpoint / "config.json").read_text()
    assert props[KEY_INPUT_SIZE] == "56,56"


def test_engine_builder_relies_on_module_path_node_names(exported):
    """The TensorRT builder keeps non-backbone layers in fp32 by name: the names must say where they are."""
    nodes = onnx.load(str(exported)).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    assert convs[0].startswith("/backbone/patch_embed/")
    assert convs[1:] and all(name.startswith("/flow/") for name in convs[1:])
    assert any(n.name.startswith("/norm/") for n in nodes)
    assert all(n.name.startswith("/backbone/") for n in nodes if n.op_type in ("Softmax", "Erf", "MatMul"))


def test_exported_model_matches_torch_on_new_inputs(checkpoint, exported):
    model = load_checkpoint(checkpoint).model
    x = torch.from_numpy(np.random.default_rng(5).uniform(-2, 2, (1, 3, 56, 56)).astype(np.float32))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    score_range = float(np.ptp(expected))
    assert score_range > 0.05  # the perturbed model is far from constant
    assert np.abs(got - expected).max() <= 1e-3 * score_range
    meta = read_onnx_metadata(exported)
    assert meta.verification["n_inputs"] == 6
    assert meta.verification["max_abs_diff"] <= meta.verification["tolerance"]


def test_dynamic_batch_and_input_size_override(checkpoint, exported_dynamic):
    report = exported_dynamic
    assert report.input_size == (42, 70) and report.padded_size == (42, 70) and report.dynamic_batch
    proto = onnx.load(str(report.path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 42, 70]
    model = load_checkpoint(checkpoint).model
    x = np.random.default_rng(1).standard_normal((3, 3, 42, 70)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[
        0
    ]
    assert got.shape == (3, 42, 70)
    np.testing.assert_allclose(got, expected, atol=1e-3 * float(np.ptp(expected)))
    meta = read_onnx_metadata(report.path)
    assert meta.input_size == (42, 70) and meta.dynamic_batch
    assert meta.identity.config.preprocess.input_size == (42, 70)


def test_verification_fails_for_a_different_model(checkpoint, exported, tmp_path):
    other = load_checkpoint(make_checkpoint(tmp_path / "other", seed=3)).model
    preprocess = load_checkpoint(checkpoint).config.preprocess
    with pytest.raises(ExportVerificationError, match="differs from torch"):
        verify_onnx(str(exported), other, preprocess, dynamic_batch=False)


def test_compare_uses_score_range_and_noise_floor():
    ref = np.linspace(0, 10, 100, dtype=np.float32).reshape(1, 10, 10)
    ok = compare(ref, ref + 0.009)
    assert ok.score_range == pytest.approx(10) and ok.tolerance == pytest.approx(0.01)
    assert ok.max_abs_diff <= ok.tolerance
    assert compare(ref, ref + 0.02).max_abs_diff > 0.01
    flat = np.full((1, 4, 4), 0.5, dtype=np.float32)
    assert compare(flat, flat).tolerance == pytest.approx(1e-5)  # constant map: float32 floor
    with pytest.raises(ExportVerificationError, match="non-finite"):
        compare(ref, ref * np.nan)


def test_verification_inputs_include_real_images():
    inputs = verification_inputs(PreprocessConfig(input_size=(28, 42)))
    assert inputs.shape == (6, 3, 28, 42) and inputs.dtype == np.float32
    assert len({float(x.std()) for x in inputs}) == 6  # all different


def test_mismatched_checkpoint_is_refused(exported, tmp_path):
    other = make_checkpoint(tmp_path / "other", seed=9)
    with pytest.raises(ModelMismatchError, match="different checkpoint"):
        OnnxRuntimeBackend(other, onnx_path=exported)


def test_mismatched_input_size_is_refused(checkpoint, exported_dynamic):
    with pytest.raises(ModelMismatchError, match="takes 42x70 inputs but 56x56"):
        OnnxRuntimeBackend(checkpoint, onnx_path=exported_dynamic.path)
    with OnnxRuntimeBackend(checkpoint, onnx_path=exported_dynamic.path, input_size=(42, 70)) as backend:
        assert backend.config.preprocess.input_size == (42, 70)


def test_file_without_metadata_is_refused(exported, tmp_path):
    proto = onnx.load(str(exported))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelMismatchError, match="not a flowclas-export model"):
        OnnxRuntimeBackend(bare)


def test_graph_that_disagrees_with_its_metadata_is_refused(exported, tmp_path):
    proto = onnx.load(str(exported))
    for prop in proto.metadata_props:
        if prop.key == KEY_INPUT_SIZE:
            prop.value = "70,70"
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    with pytest.raises(ModelMismatchError, match="disagrees with its metadata"):
        OnnxRuntimeBackend(edited)


def test_corrupt_embedded_config_is_refused(exported, tmp_path):
    proto = onnx.load(str(exported))
    for prop in proto.metadata_props:
        if prop.key == KEY_CONFIG:
            data = json.loads(prop.value)
            data["model"]["flow"]["bogus"] = 1
            prop.value = json.dumps(data)
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    with pytest.raises(ModelMismatchError, match="bogus"):
        read_onnx_metadata(edited)
