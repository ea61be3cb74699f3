"""flowclas-predict: score maps and overlays for a file or a folder, torch and onnxruntime, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from eval_support import EVAL_MODEL
from tiny_checkpoints import tiny_checkpoint, tiny_export

from flowclas_ros.evaluation.predict_cli import main
from flowclas_ros.runtime import create_backend

torch.set_num_threads(1)

SIZES = [(40, 48), (33, 61), (56, 56)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("predict") / "ckpt", **EVAL_MODEL)


@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory) -> Path:
    return tiny_export(checkpoint, tmp_path_factory.mktemp("predict_onnx") / "model.onnx")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """Three images of different sizes and formats in one folder."""
    folder = tmp_path_factory.mktemp("predict_in")
    rng = np.random.default_rng(0)
    written = {}
    for i, (h, w) in enumerate(SIZES):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[h // 3 : h // 2, w // 3 : w // 2] = (255, 0, 255)
        name = f"img{i}.{'jpg' if i == 1 else 'png'}"
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        # The JPEG is lossy: what the CLI scores is what decodes from the file.
        written[f"img{i}"] = cv2.cvtColor(cv2.imread(str(folder / name)), cv2.COLOR_BGR2RGB)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    return folder, written


def _reference(checkpoint: Path, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with create_backend("torch", checkpoint) as backend:
        return {stem: backend.predict([img])[0].score_map for stem, img in images.items()}


def test_folder_torch_writes_maps_at_image_resolution_and_overlays(checkpoint, images, tmp_path, capsys):
    folder, written = images
    out = tmp_path / "out"
    assert (
        main(["--checkpoint", str(checkpoint), "--input", str(folder), "--out", str(out), "--no-progress"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{ext}" for stem in written for ext in (".npy", ".png")
    )
    reference = _reference(checkpoint, written)
    for stem, img in written.items():
        score = np.load(out / f"{stem}.npy")
        assert score.dtype == np.float32 and score.shape == img.shape[:2]
        np.testing.assert_array_equal(score, reference[stem])
        overlay = cv2.imread(str(out / f"{stem}.png"))
        assert overlay.shape == img.shape
        assert not np.array_equal(cv2.cvtColor(overlay, cv2.COLOR_BGR2RGB), img)  # heat map blended in
    assert "wrote 3 score map(s)" in capsys.readouterr().out


def test_single_file_onnxruntime_matches_torch(checkpoint, onnx_file, images, tmp_path):
    folder, written = images
    out = tmp_path / "out"
    args = ["--checkpoint", str(onnx_file), "--backend", "onnxruntime", "--threads", "1", "--no-progress"]
    assert main([*args, "--input", str(folder / "img1.jpg"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img1.npy", "img1.png"]
    score = np.load(out / "img1.npy")
    expected = _reference(checkpoint, {"img1": written["img1"]})["img1"]
    span = float(expected.max() - expected.min())
    assert score.shape == expected.shape
    assert float(np.abs(score - expected).max()) <= 1e-3 * span


def test_unreadable_image_is_skipped_with_warning_and_exit_1(checkpoint, images, tmp_path, capsys):
    folder, _ = images
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "good.png").write_bytes((folder / "img0.png").read_bytes())
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    assert (
        main(["--checkpoint", str(checkpoint), "--input", str(bad), "--out", str(out), "--no-progress"]) == 1
    )
    captured = capsys.readouterr()
    assert "warning: skipped" in captured.err and "broken.png" in captured.err
    assert "1 of 2 image(s) skipped" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["good.npy", "good.png"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_input", "does not exist"),
        ("empty_dir", "no .png/.jpg/.jpeg images"),
        ("missing_checkpoint", "--checkpoint"),
        ("overwrite_input", "would overwrite the input image"),
        ("bad_backend_file", "error:"),
        ("sam2_flags_without_refine", "only apply to --refine sam2"),
    ],
)
def test_bad_input_one_line_error(case, message, checkpoint, images, tmp_path, capsys):
    folder, _ = images
    args = {"--checkpoint": str(checkpoint), "--input": str(folder), "--out": str(tmp_path / "out")}
    extra: list[str] = []
    if case == "missing_input":
        args["--input"] = str(tmp_path / "nope")
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        args["--input"] = str(tmp_path / "empty")
    elif case == "missing_checkpoint":
        args["--checkpoint"] = str(tmp_path / "no_ckpt")
    elif case == "overwrite_input":
        args["--out"] = str(folder)
    elif case == "bad_backend_file":
        (tmp_path / "junk.onnx").write_bytes(b"not onnx")
        args["--checkpoint"] = str(tmp_path / "junk.onnx")
        extra = ["--backend", "onnxruntime"]
    elif case == "sam2_flags_without_refine":
        extra = ["--sam2-config", "x.yaml"]
    argv = [item for pair in args.items() for item in pair] + extra + ["--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("flowclas-predict: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_help_and_onnxruntime_run_do_not_import_torch(onnx_file, images, tmp_path):
    """The CLI itself imports no torch; with runtime's torch-free backends, neither does a whole run."""
    folder, _ = images
    script = (
        "import sys\n"
        "from flowclas_ros.evaluation import predict_cli\n"
        "assert 'torch' not in sys.modules, 'predict_cli imports torch'\n"
        f"rc = predict_cli.main(['--checkpoint', {str(onnx_file)!r}, '--backend', 'onnxruntime',"
        f" '--input', {str(folder / 'img0.png')!r}, '--out', {str(tmp_path / 'o')!r}, '--no-progress'])\n"
        "print('RC', rc, 'TORCH', 'torch' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "RC 0" in run.stdout
    if "TORCH True" in run.stdout:
        probe = subprocess.run(
            [sys.executable, "-c", "import sys, flowclas_ros.runtime.base; print('torch' in sys.modules)"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if probe.stdout.strip() == "True":
            pytest.xfail("runtime.base still imports torch (made torch-free by issue 14 'runtime')")
        pytest.fail("flowclas-predict imported torch although the runtime backends are torch-free")
