from __future__ import annotations

import importlib.util

import pytest

from flowclas_ros.export import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """Runs the CLI; returns (exit code, stdout, the last non-empty stderr line)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.replace("\r", "\n").splitlines() if line.strip()]
    assert sum("error" in line for line in lines) <= 1  # the reason is one line
    return code, captured.out, lines[-1] if lines else ""


def test_help_lists_the_contract_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--format", "--out", "--fp16", "--input-size", "--dynamic-batch",
                 "--workspace-mb", "--version-compatible"):  # fmt: skip
        assert flag in text


def test_missing_checkpoint_is_one_line_error(capsys, tmp_path):
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path / "nope"), "--format", "onnx", "--out", "m.onnx")
    assert code == 1
    assert err.startswith("flowclas-export: error:") and "nope" in err


def test_corrupt_checkpoint_is_one_line_error(capsys, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "flow.safetensors").write_bytes(b"")
    code, _, err = _run(
        capsys, "--checkpoint", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "m.onnx")
    )
    assert code == 1 and err.startswith("flowclas-export: error:") and "config.json" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--version-compatible"], "only apply to --format engine"),
        (["--fp16-flow"], "--fp16-flow needs --fp16"),
        (["--input-size", "0", "10"], "must be positive"),
        (["--out-suffix", ".engine"], "should end in .onnx"),
    ],
)
def test_bad_flag_combinations(capsys, tmp_path, extra, message):
    out = tmp_path / "m.onnx"
    if extra[0] == "--out-suffix":
        out, extra = tmp_path / "m.engine", []
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path), "--format", "onnx", "--out", str(out), *extra)
    assert code == 1 and message in err


def test_bad_argument_exits_via_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", "x", "--format", "tflite", "--out", "m"])
    assert exc.value.code == 2


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_engine_without_tensorrt_fails_fast_with_reason(capsys, tmp_path):
    code, _, err = _run(capsys, "--checkpoint", str(tmp_path), "--format", "engine", "--fp16",
                        "--gate-data", str(tmp_path), "--out", str(tmp_path / "m.engine"))  # fmt: skip
    assert code == 1 and err.startswith("flowclas-export: error:") and "TensorRT is not installed" in err
    assert not (tmp_path / "m.onnx").exists()  # failed before the (long) ONNX export
