"""OpenVINO backend (f32 / bf16 / int8) and ``flowclas-export --format openvino`` with its AP gate."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")

from cpu_features import needs  # noqa: E402
from tiny_checkpoints import tiny_checkpoint, tiny_export  # noqa: E402

from flowclas_ros.export import main as export_main  # noqa: E402
from flowclas_ros.export import reduced  # noqa: E402
from flowclas_ros.model.export_meta import KEY_PRECISION, KEY_QUALITY, ModelMismatchError, read_onnx_props  # noqa: E402
from flowclas_ros.runtime import create_backend  # noqa: E402
from flowclas_ros.runtime.openvino_backend import (  # noqa: E402
    OpenVINOBackend,
    OpenVINODeviceError,
    choose_precision,
)
from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("ov")
    ckpt = tiny_checkpoint(root / "ckpt", threshold=3.0)
    data = root / "data"
    generate_dataset(data, seed=2, counts={"train": 4, "val": 0, "test": 3}, cfg=SceneConfig(size=(56, 56)))
    tiny_export(ckpt, root / "m.onnx")
    return root, ckpt, data


def _images():
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(56, 56, 3), (80, 64, 3)]]


def test_f32_matches_onnxruntime_and_reports_precision(work):
    root, _, _ = work
    with (
        create_backend("openvino", root / "m.onnx", device="cpu", precision="f32") as ov,
        create_backend("onnxruntime", root / "m.onnx") as ort,
    ):
        assert isinstance(ov, OpenVINOBackend) and ov.name == "openvino-f32" and ov.device == "CPU"
        assert ov.inference_precision == "f32" and "inference precision f32" in ov.describe()
        assert ov.threshold == pytest.approx(3.0)
        images = _images()
        got, ref = ov.predict(images), ort.predict(images)
    for a, b in zip(got, ref):
        span = float(b.score_map.max() - b.score_map.min())
        assert a.score_map.shape == b.score_map.shape
        assert float(np.abs(a.score_map - b.score_map).max()) <= 1e-3 * max(span, 1e-6) + 1e-5


@needs("openvino_bf16")
def test_bf16_sets_the_hint_explicitly(work):
    root, _, _ = work
    with OpenVINOBackend(root / "m.onnx", precision="bf16") as ov:
        assert ov.name == "openvino-bf16" and ov.inference_precision == "bf16"
        pred = ov.predict(_images()[:1])[0]
    assert np.isfinite(pred.score_map).all()


def test_bf16_refused_where_the_cpu_lacks_it(work, cpu_without_bf16):
    """On a CPU without bf16 (stood in for here): one line naming the CPU's capabilities, suggesting auto."""
    root, _, _ = work
    with pytest.raises(ValueError) as info:
        OpenVINOBackend(root / "m.onnx", precision="bf16")
    message = str(info.value)
    assert "\n" not in message and "precision bf16 is not supported natively by this CPU" in message
    assert "OpenVINO CPU: BIN, EXPORT_IMPORT, FP32, INT8" in message and "use precision auto" in message


def test_real_plugin_capabilities_decide_bf16(work):
    """Against the real plugin (no stand-in): bf16 compiles exactly where OpenVINO reports BF16."""
    import openvino as ov

    from flowclas_ros.runtime import cpu

    root, _, _ = work
    real = tuple(sorted(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    assert cpu.openvino_capabilities() == real and "FP32" in real
    if "BF16" in real:
        with OpenVINOBackend(root / "m.onnx", precision="bf16") as backend:
            assert backend.inference_precision == "bf16"
    else:
        with pytest.raises(ValueError, match="not supported natively by this CPU"):
            OpenVINOBackend(root / "m.onnx", precision="bf16")


def test_absent_device_lists_available_ones(work):
    root, _, _ = work
    with pytest.raises(OpenVINODeviceError, match=r"'NPU' is not available.*available: .*CPU"):
        OpenVINOBackend(root / "m.onnx", device="NPU")


def test_int8_needs_the_quantised_export(work):
    root, _, _ = work
    with pytest.raises(ModelMismatchError, match="is a fp32 export but precision int8"):
        OpenVINOBackend(root / "m.onnx", precision="int8")


def test_failing_gate_writes_nothing(work, monkeypatch, capsys):
    """int8 runs on every OpenVINO CPU (AVX2 included), so the gate's refusal is tested everywhere."""
    root, ckpt, data = work
    out = root / "m-int8-refused.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "int8", "--out", str(out)]
    args += ["--calib-data", str(data / "train"), "--calib-n", "2"]
    monkeypatch.setattr(reduced, "AP_TOLERANCE", -1.0)  # an impossible gate: must refuse and write nothing
    assert export_main([*args, "--gate-data", str(data / "test")]) == 1
    err = capsys.readouterr().err
    assert "OpenVINO int8 fails the quality gate: pixel AP" in err and "export not written" in err
    assert not out.exists()


@needs("openvino_bf16")
def test_failing_bf16_gate_writes_nothing(work, monkeypatch, capsys):
    root, ckpt, data = work
    out = root / "m-bf16.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "bf16", "--out", str(out)]
    monkeypatch.setattr(reduced, "AP_TOLERANCE", -1.0)
    assert export_main([*args, "--gate-data", str(data / "test")]) == 1
    err = capsys.readouterr().err
    assert "OpenVINO bf16 fails the quality gate: pixel AP" in err and "export not written" in err
    assert not out.exists()


def test_bf16_export_refused_where_the_cpu_lacks_it(work, cpu_without_bf16, capsys):
    root, ckpt, data = work
    out = root / "m-bf16-nocpu.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "bf16", "--out", str(out)]
    assert export_main([*args, "--gate-data", str(data / "test")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "precision bf16 is not supported natively by this CPU" in err[0]
    assert "FP32, INT8" in err[0] and "use precision auto" in err[0]
    assert not out.exists()


def test_int8_export_gated_written_and_runs(work, monkeypatch):
    root, ckpt, data = work
    out = root / "m-int8.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "int8", "--out", str(out)]
    args += ["--calib-data", str(data / "train"), "--calib-n", "4", "--gate-data", str(data / "test")]
    monkeypatch.setattr(reduced, "AP_TOLERANCE", 1.0)  # the tiny random model's AP is noise: accept it
    assert export_main(args) == 0
    props = read_onnx_props(out)
    assert props[KEY_PRECISION] == "int8"
    gate = json.loads(props[KEY_QUALITY])["int8"]
    assert gate["passed"] and gate["n_frames"] == 3 and 0 <= gate["ap"] <= 1 and 0 <= gate["ap_fp32"] <= 1
    with OpenVINOBackend(out, precision="int8") as ov:
        assert ov.name == "openvino-int8"
        assert np.isfinite(ov.predict(_images())[0].score_map).all()


def test_reduced_precision_needs_gate_data(work, capsys):
    root, ckpt, _ = work
    args = [
        "--checkpoint",
        str(ckpt),
        "--format",
        "openvino",
        "--precision",
        "bf16",
        "--out",
        str(root / "b.onnx"),
    ]
    assert export_main(args) == 1
    assert "--precision bf16 needs --gate-data" in capsys.readouterr().err


def test_auto_decision_from_export_record_and_cpu():
    """choose_precision with explicit capabilities: every branch, whatever this CPU is."""
    gated = {"bf16": {"passed": True, "delta": -0.001}}
    assert choose_precision("fp32", gated, ("f32", "bf16", "int8"))[0] == "bf16"
    precision, reason = choose_precision("fp32", gated, ("f32", "int8"))
    assert precision == "f32" and "no native bf16" in reason and "runs f32, int8" in reason
    precision, reason = choose_precision("fp32", {}, ("f32", "bf16", "int8"))
    assert precision == "f32" and "no bf16 AP gate" in reason and "--precision auto" in reason
    assert choose_precision("int8", {"int8": {"passed": True, "delta": 0.002}}, ("f32",)) == (
        "int8",
        "the export is quantised (passed the int8 AP gate (|ΔAP| 0.0020))",
    )


def test_auto_is_the_default_and_says_why(work, cpu_without_bf16):
    root, _, _ = work
    with OpenVINOBackend(root / "m.onnx") as ov:
        assert ov.precision == "f32" and ov.name == "openvino-f32"
        assert ov.precision_reason.startswith("auto: no native bf16") and ov.precision_reason in ov.describe()


def test_export_auto_without_calibration_data_records_f32_and_why(work, cpu_without_bf16, capsys):
    root, ckpt, data = work
    out = root / "m-auto-f32.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "auto", "--out", str(out)]
    assert export_main([*args, "--gate-data", str(data / "test")]) == 0
    assert "precision auto -> f32" in capsys.readouterr().out
    record = json.loads(read_onnx_props(out)[reduced.KEY_PRECISION_CHOICE])
    assert record["asked"] == "auto" and record["chosen"] == "f32"
    assert record["tried"] == {"bf16": "not native on this CPU (runs f32, int8)", "int8": "no --calib-data"}
    assert "FP32, INT8" in record["cpu"]


def test_export_auto_picks_int8_where_bf16_is_missing(work, cpu_without_bf16, monkeypatch):
    root, ckpt, data = work
    out = root / "m-auto-int8.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--out", str(out)]  # auto: the default
    args += ["--calib-data", str(data / "train"), "--calib-n", "2", "--gate-data", str(data / "test")]
    monkeypatch.setattr(reduced, "AP_TOLERANCE", 1.0)  # the tiny random model's AP is noise: accept it
    assert export_main(args) == 0
    props = read_onnx_props(out)
    assert props[KEY_PRECISION] == "int8" and json.loads(props[KEY_QUALITY])["int8"]["passed"]
    assert json.loads(props[reduced.KEY_PRECISION_CHOICE])["chosen"] == "int8"
    with OpenVINOBackend(out, precision="auto") as ov:
        assert ov.name == "openvino-int8" and "quantised" in ov.precision_reason


@needs("openvino_bf16")
def test_export_auto_picks_bf16_where_the_cpu_has_it(work, monkeypatch):
    root, ckpt, data = work
    out = root / "m-auto-bf16.onnx"
    args = ["--checkpoint", str(ckpt), "--format", "openvino", "--precision", "auto", "--out", str(out)]
    monkeypatch.setattr(reduced, "AP_TOLERANCE", 1.0)
    assert export_main([*args, "--gate-data", str(data / "test")]) == 0
    props = read_onnx_props(out)
    assert json.loads(props[reduced.KEY_PRECISION_CHOICE])["chosen"] == "bf16"
    with OpenVINOBackend(out) as ov:
        assert ov.name == "openvino-bf16" and ov.inference_precision == "bf16"
        assert "native bf16 and the export passed the bf16 AP gate" in ov.precision_reason
