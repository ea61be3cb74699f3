"""The backend table (runtime/registry.py): one row per backend, read by the node, the CLIs and export."""

from __future__ import annotations

import numpy as np
import pytest

from flowclas_ros.model.config import ModelConfig
from flowclas_ros.ros.param_validation import validate
from flowclas_ros.ros.settings import backend_options, check_backend_choice
from flowclas_ros.runtime import BACKENDS, InferenceBackend, create_backend, registry


class ConstantBackend(InferenceBackend):
    """A dummy backend: every pixel scores ``level``."""

    name = "constant"

    def __init__(
        self, checkpoint, device="cpu", *, precision="auto", workers=None, level=0.5, input_size=None
    ):
        super().__init__(ModelConfig(), threshold=level, device=device)
        self.precision, self.workers, self.level, self.input_size = precision, workers, level, input_size

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return np.full((batch.shape[0], *batch.shape[2:]), self.level, np.float32)


@pytest.fixture
def constant_row():
    row = registry.register_backend(
        registry.BackendSpec(
            "constant",
            ConstantBackend,
            precisions=("auto", "f32", "int8"),
            precision_option="precision",
            thread_option="workers",
            sized=True,
        )
    )
    yield row
    del registry.TABLE["constant"]


def _values(**changes):
    return {"backend": "torch", "device": "cpu", "precision": "auto", **changes}


def test_adding_a_row_alone_makes_the_node_accept_the_backend(constant_row):
    assert validate("backend", "constant") is None
    assert check_backend_choice(_values(backend="constant", precision="int8")) is None
    assert "runs auto, f32, int8" in check_backend_choice(_values(backend="constant", precision="bf16"))
    options = backend_options("constant", [64, 48], 4, 1, "int8", 3)
    assert options == {"precision": "int8", "workers": 3, "input_size": (64, 48)}
    backend = create_backend("constant", "unused", **options)
    assert isinstance(backend, ConstantBackend) and backend.precision == "int8" and backend.workers == 3
    assert BACKENDS["constant"] is ConstantBackend and "constant" in list(BACKENDS)
    image = np.zeros((20, 30, 3), np.uint8)
    assert float(backend.predict([image])[0].score_map.max()) == pytest.approx(0.5)


def test_old_api_replaces_only_the_factory():
    before = registry.spec("onnxruntime")
    try:
        registry.register_backend("onnxruntime", ConstantBackend)
        row = registry.spec("onnxruntime")
        assert row.factory is ConstantBackend and row.thread_option == "intra_op_threads" and row.sized
    finally:
        registry.register_backend(before)


def test_without_the_row_the_node_rejects_it():
    assert "not one of" in validate("backend", "constant")


def test_builtin_rows_keep_their_names_and_factories():
    assert registry.backend_names() == ("torch", "onnxruntime", "openvino", "tensorrt")
    assert BACKENDS["onnxruntime"] == "flowclas_ros.runtime.onnx_backend:OnnxRuntimeBackend"
    assert registry.spec("openvino").precisions == ("auto", "f32", "bf16", "int8")


def test_one_precision_vocabulary_old_spellings_warn():
    assert registry.canonical_precision("bf16") == "bf16"
    for old, new in (("fp32", "f32"), ("fp16", "f16"), ("fp16-all", "f16")):
        with pytest.warns(DeprecationWarning, match=f"precision '{old}' is deprecated; use '{new}'"):
            assert registry.canonical_precision(old) == new
    with pytest.raises(ValueError, match="precision must be one of auto, f32, bf16, f16, int8"):
        registry.canonical_precision("fp8")
    assert validate("precision", "fp32") is None  # old node configs keep working
    with pytest.warns(DeprecationWarning):
        assert backend_options("openvino", [0, 0], 1, 1, "fp32") == {"precision": "f32", "threads": "auto"}
    with pytest.warns(DeprecationWarning):  # TensorRT keeps its own fp16-all (no f16-all word)
        assert registry.backend_options("tensorrt", "fp16-all") == {"precision": "fp16-all"}


def test_a_row_must_use_the_vocabulary():
    with pytest.raises(ValueError, match="precisions must include auto"):
        registry.BackendSpec("bad", "x:y", precisions=("fp32",))


def test_clis_read_the_table():
    from flowclas_ros.evaluation import cli, predict_cli
    from flowclas_ros.export.cli import export_formats, openvino_precisions

    def backend_choices(parser):
        return next(a.choices for a in parser._actions if "--backend" in a.option_strings)

    assert backend_choices(cli.build_parser()) == registry.backend_names()
    assert backend_choices(predict_cli.build_parser()) == registry.backend_names()
    assert export_formats() == ("onnx", "openvino", "engine")
    assert openvino_precisions() == ("auto", "f32", "bf16", "int8", "fp32")


def test_deploy_doc_shows_the_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "DEPLOY.md").read_text()
    assert registry.markdown_table() in doc, "regenerate docs/DEPLOY.md's backend table from the registry"
