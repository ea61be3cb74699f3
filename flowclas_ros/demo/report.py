"""Stage 7: ``report.md`` / ``report.html``, the overlay strip, the overlay GIF and the 5-line summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.demo.document import Document
from flowclas_ros.demo.figures import (
    StripRow,
    display_range,
    gt_outline,
    overlay_strip,
    pick_strip_frames,
    stream_frame,
    write_gif,
)
from flowclas_ros.demo.recording import Recording, read_recording
from flowclas_ros.demo.report_sections import (
    fmt,
    live_section,
    metrics_section,
    results_section,
    timing_section,
)
from flowclas_ros.demo.runner import StageResult
from flowclas_ros.demo.settings import DemoSettings
from flowclas_ros.demo.stages import (
    AGREEMENT_FILE,
    BAG_START_S,
    CAMERA,
    NODE_NAME,
    DatasetParams,
    read_metrics,
)
from flowclas_ros.runtime.postprocess import Region, render_overlay

FIGURES = "figures"
STRIP_FILE = "overlay_strip.png"
GIF_FILE = "overlay_stream.gif"
SUMMARY_FILE = "summary.json"
OVERLAY_ALPHA = 0.5  # the node's default overlay_alpha
GIF_DISPLAY_WIDTH = 900  # px in report.html: the GIF is drawn at the input's size, shown enlarged


def frame_index(stamp_ns: int, rate_hz: float) -> int:
    """Test-split index of a bag frame from its stamp (frame i is stamped start + i / rate)."""
    return round((stamp_ns - BAG_START_S * 1_000_000_000) * rate_hz / 1e9)


def answered_frames(rec: Recording, n_frames: int, rate_hz: float) -> dict[int, int]:
    """Test-split index -> stamp of the frames with a recorded result, score map and mask."""
    stamps = {r["stamp_ns"] for r in rec.results} & rec.score_maps.keys() & rec.masks.keys()
    by_index = {frame_index(s, rate_hz): s for s in stamps}
    return {i: by_index[i] for i in sorted(by_index) if 0 <= i < n_frames}


def rviz_overlay(
    image: np.ndarray,
    score_map: np.ndarray,
    result: dict[str, Any],
    score_range: tuple[float, float],
    scale: int = 1,
) -> np.ndarray:
    """The node's ``~/overlay`` for one result (its renderer and regions, a fixed colour range).

    Drawn at ``scale`` times the input size (regions scaled along) so labels stay legible.
    """
    if scale > 1:
        size = (image.shape[1] * scale, image.shape[0] * scale)
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        score_map = cv2.resize(score_map, size, interpolation=cv2.INTER_LINEAR)
    regions = [
        Region(
            g["x"] * scale,
            g["y"] * scale,
            g["width"] * scale,
            g["height"] * scale,
            g["peak_score"],
            g["mean_score"],
            g["area"],
        )
        for g in result["regions"]
    ]
    return render_overlay(
        image,
        score_map,
        result["threshold"],
        regions,
        alpha=OVERLAY_ALPHA,
        score_range=score_range,
        image_score=result["image_score"],
    )


def overlay_gif(
    rec: Recording,
    dataset: FolderDataset,
    frames_by_index: dict[int, int],
    score_range: tuple[float, float],
    settings: DemoSettings,
    path: Path,
) -> int:
    """The overlay stream in the order received (dropped frames are missing, as in RViz); returns frames."""
    results = {r["stamp_ns"]: r for r in rec.results}
    period_ms = 1000.0 / settings.bag_rate_hz
    frames, durations = [], []
    indices = list(frames_by_index)
    for i, index in enumerate(indices):
        stamp = frames_by_index[index]
        image = dataset.load_image(index)
        scale = max(1, round(settings.gif_side / max(image.shape[:2])))
        overlay = rviz_overlay(image, rec.score_maps[stamp], results[stamp], score_range, scale)
        big = cv2.resize(image, overlay.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        truth = cv2.resize(
            dataset.load_mask(index, image.shape[:2]), big.shape[1::-1], interpolation=cv2.INTER_NEAREST
        )
        caption = f"frame {index + 1}/{len(dataset)}  model {results[stamp]['model_ms']:.0f} ms"
        frames.append(stream_frame(overlay, gt_outline(big, truth), caption))
        shown_for = (indices[i + 1] - index) if i + 1 < len(indices) else 1  # until the next answered frame
        durations.append(shown_for * period_ms / settings.rate_factor)
    write_gif(frames, durations, path)
    return len(frames)


def strip_rows(
    rec: Recording, dataset: FolderDataset, frames_by_index: dict[int, int], count: int
) -> list[StripRow]:
    """The overlay strip's frames, from the node's score maps and masks."""
    results = {r["stamp_ns"]: r for r in rec.results}
    rows = []
    for index in pick_strip_frames(dataset, list(frames_by_index), count):
        stamp = frames_by_index[index]
        image = dataset.load_image(index)
        rows.append(
            StripRow(
                dataset.stems[index],
                image,
                rec.score_maps[stamp],
                rec.masks[stamp],
                dataset.load_mask(index, image.shape[:2]),
                results[stamp]["image_score"],
            )
        )
    return rows


def summary_lines(
    settings: DemoSettings,
    params: DatasetParams,
    torch_m: dict[str, Any],
    ort_m: dict[str, Any],
    agreement: dict[str, Any],
    live_m: dict[str, Any],
    rec: Recording,
) -> list[str]:
    """The five lines printed at the end."""
    thr = torch_m.get("threshold") or {}
    live = live_m.get("live") or {}
    d = agreement["metrics"]
    return [
        f"report: {settings.out / 'report.html'} (and report.md); figures in {settings.out / FIGURES}",
        f"test split ({torch_m['n_images']} frames {params.size[0]}x{params.size[1]}), torch: pixel AUROC "
        f"{fmt(torch_m['auroc'])}, AP {fmt(torch_m['ap'])}, FPR95 {fmt(torch_m['fpr95'])}, image AUROC "
        f"{fmt(torch_m['image_auroc'])}; threshold {fmt(thr.get('threshold'), 3)} -> precision "
        f"{fmt(thr.get('precision'), 3)}, recall {fmt(thr.get('recall'), 3)}",
        f"onnxruntime: AUROC {fmt(ort_m['auroc'])}, AP {fmt(ort_m['ap'])} "
        f"(|dAUROC| {d['auroc']['abs_diff']:.1e}, |dAP| {d['ap']['abs_diff']:.1e} "
        f"<= {agreement['tolerance']:g}: agree); latency p50 "
        f"{fmt(ort_m['latency_ms']['p50'], 1)} ms vs torch {fmt(torch_m['latency_ms']['p50'], 1)} ms",
        f"live through anomaly_node: {live.get('n_published')} frames at "
        f"{settings.bag_rate_hz * settings.rate_factor:g} Hz, {live.get('n_answered')} answered, "
        f"{live.get('n_dropped')} dropped (newest-frame policy); end-to-end p50/p99 "
        f"{fmt(live_m['latency_ms']['p50'], 0)}/{fmt(live_m['latency_ms']['p99'], 0)} ms; "
        f"AP {fmt(live_m['ap'])}",
        f"recorded from the node ({settings.live / 'recorded'}): "
        + ", ".join(f"{v} {k}" for k, v in rec.counts.items()),
    ]


def write_report(
    settings: DemoSettings,
    params: DatasetParams,
    stage_results: Sequence[StageResult],
    threads_used: dict[str, int],
) -> list[str]:
    """Writes the figures, ``report.md``, ``report.html`` and ``summary.json``; returns the summary lines."""
    out = settings.out
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    torch_m, ort_m, live_m = (
        read_metrics(p) for p in (settings.eval_torch, settings.eval_ort, settings.live)
    )
    agreement = json.loads((settings.eval_ort / AGREEMENT_FILE).read_text())
    dataset = FolderDataset(settings.test_split, require_masks=True)
    rec = read_recording(settings.live / "recorded", NODE_NAME, CAMERA)
    answered = answered_frames(rec, len(dataset), settings.bag_rate_hz)
    if not answered:
        raise ValueError(f"the recording {settings.live / 'recorded'} holds no complete answer of the node")
    score_range = display_range(np.stack([rec.score_maps[s] for s in answered.values()]))
    threshold = rec.results[0]["threshold"]
    panel = max(224, *dataset.load_image(0).shape[:2])
    rows = strip_rows(rec, dataset, answered, settings.strip_frames)
    overlay_strip(rows, threshold, score_range, out / FIGURES / STRIP_FILE, panel_side=panel)
    n_gif = overlay_gif(rec, dataset, answered, score_range, settings, out / FIGURES / GIF_FILE)
    lines = summary_lines(settings, params, torch_m, ort_m, agreement, live_m, rec)
    ckpt = json.loads((settings.checkpoint / "config.json").read_text())

    doc = Document("flowclas_ros demo: the whole mission end to end")
    doc.paragraph(
        f"A synthetic planetary rover scene dataset ({params.n_train} normal training frames, {params.n_val} "
        f"validation and {params.n_test} held-out test frames with foreign objects as anomalies, "
        f"{params.size[0]}x{params.size[1]}) trained with `{settings.config.name}`, "
        "evaluated offline with torch and ONNX Runtime, and replayed live as a rosbag through the real "
        "`anomaly_node`. The backbone is a **random-init** ViT-S/14 (no pretrained weights can be downloaded "
        "here): the numbers show the pipeline working, not what DINOv2 features reach."
    )
    doc.heading("Summary")
    doc.bullets(lines)
    metrics_section(doc, torch_m, ort_m, live_m, agreement, ckpt)
    live_section(doc, settings, live_m, rec)
    doc.heading("Pixel ROC and precision-recall (torch, test split)")
    doc.images([("ROC", "eval_torch/roc.png"), ("PR", "eval_torch/pr.png")])
    doc.heading("Overlay strip: input | score map | mask | ground truth")
    doc.paragraph(
        f"What the node published during the live replay (torch backend): its `score_map` and `mask` for "
        f"{len(rows)} frames, picked evenly among the anomalous test frames it answered, plus one normal "
        f"frame. Score colours span a fixed range, {score_range[0]:.3f} (blue, the median pixel) to "
        f"{score_range[1]:.3f} (red); the mask is score >= {threshold:.4f}, the calibrated threshold."
    )
    doc.images([("overlay strip", f"{FIGURES}/{STRIP_FILE}")])
    doc.heading("The overlay stream, as RViz shows it")
    doc.paragraph(
        f"Left: each answered frame's overlay drawn by the node's renderer (`render_overlay`: heat map, "
        f"region boxes with peak scores, ANOMALY/normal label) from the recorded score map and result, with "
        f"`overlay_score_range: [{score_range[0]:.3f}, {score_range[1]:.3f}]`; {n_gif} frames at the "
        "replay's pace, dropped frames missing as they would be in RViz. Right: the input with the "
        "ground-truth anomalies outlined in green."
    )
    doc.images([("overlay stream", f"{FIGURES}/{GIF_FILE}")], width=GIF_DISPLAY_WIDTH)
    results_section(doc, rec, lambda stamp: frame_index(stamp, settings.bag_rate_hz) + 1)
    timing_section(doc, stage_results, threads_used, settings.bootstrap_s)
    doc.heading("Files")
    doc.bullets(
        [
            "`eval_torch/report.md`, `eval_ort/report.md`, `live/report.md`: the evaluation reports "
            "(worst/best frames) and their `metrics.json`",
            "`live/recorded/`: rosbag2 of the node's result, score_map, mask and /diagnostics messages; "
            "`live/node.log`: the node's log; `live/test_bag/`: the replayed bag",
            "`train/checkpoint/`: the checkpoint (config.json + flow.safetensors); "
            "`onnx/model.onnx`: its ONNX export",
        ]
    )
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html())
    (out / SUMMARY_FILE).write_text(json.dumps({"summary": lines}, indent=2) + "\n")
    return lines
