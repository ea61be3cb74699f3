"""A fixed-batch ONNX graph with batch > 1: the last, short chunk is padded, not a shape error (16.17)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from tiny_checkpoints import tiny_checkpoint, tiny_export

from flowclas_ros.model.export_meta import INPUT_NAME, KEY_DYNAMIC_BATCH
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend

FIXED = 3


@pytest.fixture(scope="module")
def fixed_batch_onnx(tmp_path_factory):
    """A real export with its batch axis then pinned to 3 (what a fixed-batch exporter or tool writes)."""
    tmp = tmp_path_factory.mktemp("fixed_batch")
    checkpoint = tiny_checkpoint(
        tmp / "ckpt", input_size=(28, 42), kind="likelihood", proj_dim=16, perturb=0.0, threshold=0.5
    )
    dynamic = tiny_export(checkpoint, tmp / "dynamic.onnx", "--dynamic-batch")
    model = onnx.load(str(dynamic))
    for value in (model.graph.input[0], model.graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = FIXED
    for prop in model.metadata_props:
        if prop.key == KEY_DYNAMIC_BATCH:
            prop.value = "false"
    fixed = tmp / "fixed3.onnx"
    onnx.save(model, str(fixed))
    return dynamic, fixed


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_fixed_batch_pads_the_last_chunk(fixed_batch_onnx, count):
    dynamic, fixed = fixed_batch_onnx
    rng = np.random.default_rng(count)
    images = [rng.integers(0, 256, (28 + 5 * i, 42, 3), dtype=np.uint8) for i in range(count)]
    with (
        OnnxRuntimeBackend(fixed, intra_op_threads=1) as backend,
        OnnxRuntimeBackend(dynamic, intra_op_threads=1) as reference,
    ):
        assert backend._fixed_batch == FIXED and reference._fixed_batch is None
        got = backend.predict(images)
        want = reference.predict(images)
    assert len(got) == count
    for image, g, w in zip(images, got, want):
        assert g.score_map.shape == image.shape[:2]
        np.testing.assert_allclose(g.score_map, w.score_map, rtol=1e-4, atol=1e-4)


def test_unpadded_fixed_batch_run_is_a_shape_error(fixed_batch_onnx):
    """What the padding avoids: ONNX Runtime refuses a short batch on a fixed-batch graph."""
    _, fixed = fixed_batch_onnx
    with OnnxRuntimeBackend(fixed, intra_op_threads=1) as backend:
        short = np.zeros((2, 3, 28, 42), np.float32)
        with pytest.raises(Exception, match="(?i)dimension|shape"):
            backend.session.run(None, {INPUT_NAME: short})
