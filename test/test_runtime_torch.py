from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.data.images.transforms import resize_score_map, to_model_input
from flowclas_ros.model import ModelConfig, PreprocessConfig, load_checkpoint
from flowclas_ros.runtime import InferenceBackend, Prediction, create_backend
from flowclas_ros.runtime.torch_backend import TorchBackend

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tiny_checkpoint(
        tmp_path_factory.mktemp("rt") / "ckpt",
        input_size=(50, 64),
        kind="likelihood",
        proj_dim=16,
        perturb=0.05,
        threshold=0.5,
    )
    return load_checkpoint(path).model.eval(), path


def _images():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in [(120, 90, 3), (37, 53, 3), (50, 64, 3)]
    ]


def test_predict_returns_maps_at_original_sizes(checkpoint):
    model, path = checkpoint
    images = _images()
    with create_backend("torch", path) as backend:
        assert isinstance(backend, TorchBackend) and backend.name == "torch"
        assert backend.threshold == 0.5 and backend.config.preprocess.input_size == (50, 64)
        predictions = backend.predict(images)
    assert len(predictions) == len(images)
    with torch.no_grad():
        reference = model(torch.from_numpy(to_model_input(images, model.cfg.preprocess))).numpy()
    for image, pred, ref in zip(images, predictions, reference):
        assert isinstance(pred, Prediction)
        assert pred.score_map.shape == image.shape[:2] and pred.score_map.dtype == np.float32
        assert np.isfinite(pred.score_map).all() and pred.model_ms > 0
        np.testing.assert_allclose(pred.score_map, resize_score_map(ref, image.shape[:2]), atol=1e-5)
        assert pred.image_score == pytest.approx(float(pred.score_map.max()))


def test_backend_from_model_and_close(checkpoint):
    model, _ = checkpoint
    backend = TorchBackend(model, threshold=0.1)
    assert backend.predict(_images()[:1])[0].score_map.shape == (120, 90)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.predict(_images()[:1])


def test_bad_inputs_and_unknown_backend(checkpoint):
    _, path = checkpoint
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        create_backend("nope", path)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TorchBackend(path, precision="f16")
    with pytest.warns(DeprecationWarning, match="'fp16' is deprecated; use 'f16'"):  # old spelling works
        with pytest.raises(ValueError, match="needs a CUDA device"):
            TorchBackend(path, precision="fp16")
    backend = TorchBackend(path)
    with pytest.raises(ValueError, match=r"image 1: expected an HxWx3 uint8 RGB array"):
        backend.predict([_images()[0], np.zeros((10, 10), dtype=np.uint8)])


def test_to_model_input_normalises_and_resizes():
    cfg = PreprocessConfig(input_size=(4, 6), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    image = np.full((8, 12, 3), 255, dtype=np.uint8)
    batch = to_model_input([image], cfg)
    assert batch.shape == (1, 3, 4, 6) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_allclose(batch[0, :, 0, 0], [2.0, 1.0, 0.5], rtol=1e-6)


def test_resize_score_map_matches_torch_bilinear():
    score = np.random.default_rng(1).random((7, 9)).astype(np.float32)
    ours = resize_score_map(score, (21, 27))
    ref = torch.nn.functional.interpolate(torch.from_numpy(score)[None, None], size=(21, 27), mode="bilinear")
    np.testing.assert_allclose(ours, ref[0, 0].numpy(), atol=1e-3)


def test_backend_is_an_abstract_interface():
    with pytest.raises(TypeError):
        InferenceBackend(ModelConfig(), None, "cpu")  # _forward is abstract
