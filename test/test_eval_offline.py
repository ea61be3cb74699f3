"""flowclas-eval on folders and rosbags: metrics vs scikit-learn, folder == bag, encodings, damage, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from eval_support import (
    EVAL_MODEL,
    IMAGE_TOPIC,
    MASK_TOPIC,
    assert_same_metrics,
    make_dataset,
    sklearn_reference,
)
from tiny_checkpoints import tiny_checkpoint

from flowclas_ros.data.bags.frames import BagReadWarning, iter_bag_frames, write_bag_from_folder
from flowclas_ros.data.bags.writer import DEFAULT_START_NS
from flowclas_ros.evaluation.cli import main
from flowclas_ros.evaluation.report import CONTRACT_KEYS

torch.set_num_threads(1)
N = 8
# Keys that must match exactly between two evaluations of the same frames.
SAME = ("auroc", "ap", "fpr95", "image_auroc", "n_images", "pixel", "threshold", "frames")


def run_eval(capsys, *args: str, example_figures: bool = False):
    """Run flowclas-eval in-process; returns (exit code, metrics.json or None, captured stdout/stderr).

    Without ``example_figures`` the report skips its worst/best frame figures (``--examples 0``):
    they take half of a tiny evaluation's time and only the first test looks at them.
    """
    examples = [] if example_figures else ["--examples", "0"]
    rc = main([*args, "--no-progress", "--threads", "1", *examples])
    captured = capsys.readouterr()
    out = Path(args[args.index("--out") + 1]) / "metrics.json"
    return rc, (json.loads(out.read_text()) if rc == 0 else None), captured


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", **EVAL_MODEL)


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    images, masks = make_dataset(root / "data", N)
    return root, images, masks


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    root = tmp_path_factory.mktemp("grey")
    images, masks = make_dataset(root / "data", N, grey=True, seed=3)
    return root, images, masks


def _folder_eval(root: Path, ckpt: Path) -> dict:
    out = root / "eval_folder"
    if not (out / "metrics.json").exists():
        assert (
            main(
                ["--checkpoint", str(ckpt), "--data", str(root / "data"), "--out", str(out), "--no-progress"]
                + ["--examples", "0"]
            )
            == 0
        )
    return json.loads((out / "metrics.json").read_text())


def test_folder_eval_matches_sklearn_and_writes_the_report(ckpt, colour, capsys):
    root, images, masks = colour
    rc, m, cap = run_eval(
        capsys,
        *("--checkpoint", str(ckpt), "--data", str(root / "data"), "--out", str(root / "e1")),
        example_figures=True,
    )
    assert rc == 0, cap.err
    ref = sklearn_reference(ckpt, images, masks)
    for key in ("auroc", "ap", "fpr95", "image_auroc"):
        assert m[key] == pytest.approx(ref[key], abs=1e-3), key
    # Even a random model sees the magenta squares: proves masks and score maps are aligned.
    assert 0.6 < m["auroc"] < 1.0 and m["pixel"]["n_ignored"] > 0 and m["pixel"]["n_clipped"] == 0
    # docs/ARCHITECTURE.md contract: these keys, spelled exactly, latency with exactly p50/p90/p99.
    assert set(CONTRACT_KEYS) <= set(m)
    assert set(m["latency_ms"]) == {"p50", "p90", "p99"}
    assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p90"] <= m["latency_ms"]["p99"]
    assert m["n_images"] == N and m["frames"]["n_anomalous_images"] == N // 2
    assert isinstance(m["auroc"], float) and isinstance(m["n_images"], int)
    thr = m["threshold"]
    assert thr["source"] == "checkpoint" and thr["threshold"] == 20.0
    assert {"precision", "recall", "iou", "fpr"} <= set(thr)
    assert m["backend"] == "torch" and m["checkpoint"] == str(ckpt) and m["partial"] is False
    assert m["throughput"]["images_per_s"] > 0 and 0 < m["throughput"]["model_fraction"] <= 1
    report = (root / "e1" / "report.md").read_text()
    assert "| pixel AUROC |" in report and "## Threshold summary" in report and "IoU" in report
    for png in ("roc.png", "pr.png", "worst_frames.png", "best_frames.png"):
        assert f"]({png})" in report
        img = cv2.imread(str(root / "e1" / png))
        assert img is not None and img.shape[0] > 100, png
    # --threshold overrides the checkpoint's; --batch-size gives the same numbers.
    rc, m2, cap = run_eval(
        capsys,
        *("--checkpoint", str(ckpt), "--data", str(root / "data"), "--out", str(root / "e2")),
        *("--threshold", "25.5", "--batch-size", "3"),
    )
    assert rc == 0, cap.err
    assert m2["threshold"]["source"] == "--threshold" and m2["threshold"]["threshold"] == 25.5
    for key in ("auroc", "ap", "fpr95", "image_auroc"):
        # Batched forwards differ from single ones by float noise (~1e-6 relative).
        assert m2[key] == pytest.approx(m[key], abs=2e-3)


@pytest.mark.parametrize(
    ("encoding", "storage", "dataset"),
    [
        ("rgb8", "sqlite3", "colour"),
        ("bgr8", "sqlite3", "colour"),
        ("rgba8", "sqlite3", "colour"),
        ("bgra8", "mcap", "colour"),
        ("png", "sqlite3", "colour"),
        ("mono8", "sqlite3", "grey"),  # grey images: mono is lossless
        ("mono16", "mcap", "grey"),
    ],
)
def test_bag_eval_is_identical_to_folder_eval(ckpt, encoding, storage, dataset, request, capsys):
    root, _, _ = request.getfixturevalue(dataset)
    folder = _folder_eval(root, ckpt)
    bag = root / f"bag_{encoding}"
    shutil.rmtree(bag, ignore_errors=True)
    write_bag_from_folder(root / "data", bag, encoding=encoding, storage=storage)
    rc, m, cap = run_eval(
        capsys,
        *(
            "--checkpoint",
            str(ckpt),
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE_TOPIC,
            "--mask-topic",
            MASK_TOPIC,
        ),
        *("--out", str(root / f"eval_{encoding}")),
    )
    assert rc == 0, cap.err
    assert_same_metrics(m, folder, SAME)
    assert m["bag"]["n_paired_exact"] == N and m["bag"]["problems"] == [] and m["warnings"] == []
    assert m["source"]["kind"] == "bag" and m["source"]["image_topic"] == IMAGE_TOPIC


def test_jpeg_bag_eval(ckpt, colour, capsys):
    root, _, _ = colour
    folder = _folder_eval(root, ckpt)
    bag = root / "bag_jpeg"
    shutil.rmtree(bag, ignore_errors=True)
    write_bag_from_folder(root / "data", bag, encoding="jpeg")
    rc, m, cap = run_eval(
        capsys,
        *(
            "--checkpoint",
            str(ckpt),
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE_TOPIC,
            "--mask-topic",
            MASK_TOPIC,
        ),
        *("--out", str(root / "eval_jpeg")),
    )
    assert rc == 0, cap.err
    assert m["n_images"] == N and m["bag"]["n_paired_exact"] == N
    assert m["pixel"]["n_pos"] == folder["pixel"]["n_pos"]  # masks are lossless, images are not
    assert m["auroc"] != folder["auroc"] and m["auroc"] == pytest.approx(folder["auroc"], abs=0.05)


def test_missing_masks_are_counted_and_reported(ckpt, tmp_path, capsys):
    images, masks = make_dataset(tmp_path / "data", 6, drop_masks=(1, 2), seed=5)
    rc, m, cap = run_eval(
        capsys, "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "f")
    )
    assert rc == 0, cap.err
    assert m["frames"]["n_unpaired"] == 2 and m["frames"]["n_with_mask"] == 4 and m["n_images"] == 6
    assert m["source"]["n_unpaired"] == 2
    assert any("2 of 6 images have no mask" in w for w in m["warnings"]) and "no mask" in cap.err
    ref = sklearn_reference(ckpt, images, masks)
    assert m["auroc"] == pytest.approx(ref["auroc"], abs=1e-3) and ref["n_labelled"] == 4
    assert "2 of 6 images have no mask" in (tmp_path / "f" / "report.md").read_text()
    # Same data through a bag: the two frames without a mask message are counted as unpaired.
    write_bag_from_folder(tmp_path / "data", tmp_path / "bag")
    rc, b, cap = run_eval(
        capsys,
        *("--checkpoint", str(ckpt), "--bag", str(tmp_path / "bag"), "--image-topic", IMAGE_TOPIC),
        *("--mask-topic", MASK_TOPIC, "--out", str(tmp_path / "b")),
    )
    assert rc == 0, cap.err
    assert b["bag"]["n_unpaired"] == 2 and b["frames"]["n_unpaired"] == 2
    assert any("2 of 6 frames have no mask" in w for w in b["warnings"])
    for key in SAME:
        assert b[key] == m[key], key


def test_mask_dir_with_nearest_stamp_pairing(ckpt, colour, tmp_path, capsys):
    root, _, masks = colour
    folder = _folder_eval(root, ckpt)
    bag = tmp_path / "bag"
    write_bag_from_folder(root / "data", bag, mask_topic=None)
    mask_dir = tmp_path / "masks"
    mask_dir.mkdir()
    for i, mask in enumerate(masks):
        stamp = DEFAULT_START_NS + i * 100_000_000 + 3_000_000  # 3 ms off the image stamp
        cv2.imwrite(str(mask_dir / f"{stamp // 10**9}_{stamp % 10**9:09d}.png"), mask)
    rc, m, cap = run_eval(
        capsys,
        *(
            "--checkpoint",
            str(ckpt),
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE_TOPIC,
            "--mask-dir",
            str(mask_dir),
        ),
        *("--stamp-tolerance", "0.005", "--out", str(tmp_path / "e")),
    )
    assert rc == 0, cap.err
    assert m["bag"]["n_paired_nearest"] == N
    assert_same_metrics(m, folder, SAME)
    rc, exact, cap = run_eval(
        capsys,
        *(
            "--checkpoint",
            str(ckpt),
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE_TOPIC,
            "--mask-dir",
            str(mask_dir),
        ),
        *("--stamp-tolerance", "0", "--out", str(tmp_path / "e0")),
    )
    assert rc == 0 and exact["frames"]["n_unpaired"] == N and exact["auroc"] is None


def test_corrupt_bag_gives_a_partial_evaluation_with_a_warning(ckpt, tmp_path, capsys):
    images, masks = make_dataset(tmp_path / "data", 16, seed=7)
    bag = tmp_path / "bag"
    write_bag_from_folder(tmp_path / "data", bag)
    db = next(bag.glob("*.db3"))
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    rc, m, cap = run_eval(
        capsys,
        *(
            "--checkpoint",
            str(ckpt),
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE_TOPIC,
            "--mask-topic",
            MASK_TOPIC,
        ),
        *("--out", str(tmp_path / "e")),
    )
    assert rc == 0, cap.err
    assert m["partial"] is True and m["bag"]["problems"] and m["bag"]["salvage"]
    assert 2 <= m["n_images"] < 16 and m["n_images"] == m["bag"]["n_frames"]
    assert any(w.startswith("DAMAGED BAG") for w in m["warnings"]) and "DAMAGED BAG" in cap.err
    assert "[PARTIAL: damaged bag]" in cap.out
    report = (tmp_path / "e" / "report.md").read_text()
    assert "**WARNING:** DAMAGED BAG" in report and "damaged: YES" in report
    # The partial metrics are those of exactly the frames that could be read.
    with pytest.warns(BagReadWarning, match="damaged"):
        frames = list(iter_bag_frames(bag, IMAGE_TOPIC, MASK_TOPIC))
    ref = sklearn_reference(ckpt, [f.image for f in frames], [f.mask for f in frames])
    assert m["auroc"] == pytest.approx(ref["auroc"], abs=1e-3)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--checkpoint", "{tmp}/nope", "--data", "{data}"], "checkpoint {tmp}/nope does not exist"),
        (
            ["--checkpoint", "{ckpt}", "--data", "{tmp}/missing"],
            "dataset folder {tmp}/missing does not exist",
        ),
        (["--checkpoint", "{ckpt}", "--data", "{tmp}"], "images: folder not found"),
        (
            ["--checkpoint", "{ckpt}", "--bag", "{bag}", "--image-topic", "/nope"],
            "topics: /camera/anomaly_mask",
        ),
        (["--checkpoint", "{ckpt}", "--bag", "{tmp}/nobag", "--image-topic", "/x"], "does not exist"),
        (["--checkpoint", "{ckpt}", "--bag", "{bag}"], "--bag needs --image-topic"),
        (["--checkpoint", "{ckpt}", "--data", "{data}", "--bag", "{bag}"], "exactly one of --data"),
        (["--checkpoint", "{ckpt}", "--data", "{data}", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--checkpoint", "{badckpt}", "--data", "{data}"], "config.json"),
        (["--checkpoint", "{ckpt}", "--data", "{data}", "--backend", "caffe"], "invalid choice"),
        (["--data", "{data}"], "--checkpoint is required"),
        (["--live", "--checkpoint", "{ckpt}", "--data", "{data}"], "--live needs --bag"),
        (["--checkpoint", "{ckpt}", "--data", "{data}", "--attach"], "only apply to --live"),
    ],
)
def test_cli_errors_are_one_line_and_nonzero(ckpt, colour, tmp_path, capsys, args, expected):
    root, _, _ = colour
    bag = root / "bag_err"
    if not bag.exists():
        write_bag_from_folder(root / "data", bag)
    bad = tmp_path / "badckpt"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    fill = {
        "tmp": str(tmp_path),
        "data": str(root / "data"),
        "ckpt": str(ckpt),
        "bag": str(bag),
        "badckpt": str(bad),
    }
    argv = [a.format(**fill) for a in args] + ["--out", str(tmp_path / "out")]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith("flowclas-eval: error: ") and expected.format(**fill) in err, err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_console_script_help_and_error(tmp_path):
    exe = Path(sys.executable).parent / "flowclas-eval"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "flowclas_ros.evaluation.cli"]
    helped = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0 and "--live" in helped.stdout and "--mask-topic" in helped.stdout
    failed = subprocess.run(
        [*cmd, "--checkpoint", str(tmp_path / "x"), "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1 and "does not exist" in failed.stderr


def test_grey_folder_has_no_colour(grey):
    """Guard for the mono tests: grey images really are R = G = B."""
    _, images, _ = grey
    assert all(
        np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2]) for im in images
    )
