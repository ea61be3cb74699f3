from __future__ import annotations

import importlib.util
import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.runtime import BACKENDS, Prediction, create_backend
from flowclas_ros.runtime.engine_cache import CACHE_ENV, onnx_cache_path
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend, session_options

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(
        tmp_path_factory.mktemp("rt_onnx") / "ckpt",
        input_size=(42, 56),  # not square: the backend's resizing is seen
        kind="likelihood",
        proj_dim=16,
        perturb=0.02,
        seed=1,
        threshold=0.7,
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def backend(checkpoint, cache_dir):
    """Built through the registry from the checkpoint alone: exports into the cache on first use."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache_dir))
        built = create_backend("onnxruntime", checkpoint, intra_op_threads=1)
    yield built
    built.close()


def _images():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(120, 90, 3), (37, 53, 3), (42, 56, 3)]]


def test_registered_and_constructible_from_checkpoint_alone(backend, checkpoint, cache_dir):
    assert BACKENDS["onnxruntime"] == "flowclas_ros.runtime.onnx_backend:OnnxRuntimeBackend"
    assert isinstance(backend, OnnxRuntimeBackend) and backend.name == "onnxruntime"
    assert backend.threshold == pytest.approx(0.7) and backend.device == "cpu"
    assert backend.config.preprocess.input_size == (42, 56)
    assert backend.providers == ["CPUExecutionProvider"]
    sha = backend.session.get_modelmeta().custom_metadata_map["flowclas.checkpoint_sha256"]
    assert backend.onnx_path == onnx_cache_path(cache_dir, sha, (42, 56), False)


def test_cached_export_is_reused(backend, checkpoint, cache_dir):
    stamp = backend.onnx_path.stat().st_mtime_ns
    with OnnxRuntimeBackend(checkpoint, cache_dir=cache_dir) as again:
        assert again.onnx_path == backend.onnx_path
    assert backend.onnx_path.stat().st_mtime_ns == stamp


def test_same_predictions_as_torch(backend, checkpoint):
    images = _images()
    with create_backend("torch", checkpoint) as torch_backend:
        expected = torch_backend.predict(images)
    got = backend.predict(images)  # batch of 3 on a batch-1 graph: run one by one
    score_range = max(float(np.ptp(p.score_map)) for p in expected)
    assert score_range > 0.05
    for image, ref, out in zip(images, expected, got):
        assert isinstance(out, Prediction) and out.score_map.shape == image.shape[:2]
        assert out.score_map.dtype == np.float32 and out.model_ms > 0
        assert np.abs(out.score_map - ref.score_map).max() <= 1e-3 * score_range
        assert out.image_score == pytest.approx(ref.image_score, abs=1e-3 * score_range)


def test_onnx_file_alone_and_thread_settings(backend):
    with OnnxRuntimeBackend(backend.onnx_path, intra_op_threads=1, inter_op_threads=1) as alone:
        assert alone.threshold == pytest.approx(0.7) and alone.config == backend.config
        options = alone.session.get_session_options()
        assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
        assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
        image = _images()[:1]
        np.testing.assert_array_equal(alone.predict(image)[0].score_map, backend.predict(image)[0].score_map)


def test_session_options_validate_level():
    assert session_options(graph_optimization="basic").graph_optimization_level == (
        ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    assert session_options(inter_op_threads=2).execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(allow_spinning=True)
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(ValueError, match="graph_optimization"):
        session_options(graph_optimization="max")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP present")
def test_cuda_without_cuda_provider_falls_back_to_cpu_with_warning(backend, caplog):
    with caplog.at_level(logging.WARNING), OnnxRuntimeBackend(backend.onnx_path, device="cuda") as fallback:
        assert fallback.device == "cpu" and fallback.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text


def test_unknown_device_rejected(backend):
    with pytest.raises(ValueError, match="device"):
        OnnxRuntimeBackend(backend.onnx_path, device="tpu")


def test_closed_backend_raises(backend):
    other = OnnxRuntimeBackend(backend.onnx_path)
    other.close()
    with pytest.raises(RuntimeError, match="closed"):
        other.predict(_images()[:1])


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_tensorrt_backend_registered_but_reports_missing_tensorrt(checkpoint):
    with pytest.raises(ImportError, match="TensorRT is not installed"):
        create_backend("tensorrt", checkpoint, device="cuda")
