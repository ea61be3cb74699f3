"""Stage 7: ``report.md`` / ``report.html``, the overlay strip, the overlay GIF and the 5-line summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowclas_ros.data.folder import FolderDataset
from flowclas_ros.demo.document import Document
from flowclas_ros.demo.figures import (
    ScoreMaps,
    display_range,
    gt_outline,
    overlay_strip,
    pick_strip_frames,
    stream_frame,
    write_gif,
)
from flowclas_ros.demo.recording import Recording, read_recording
from flowclas_ros.demo.runner import StageResult
from flowclas_ros.demo.settings import DemoSettings
from flowclas_ros.demo.stages import (
    AGREEMENT_FILE,
    BAG_START_S,
    CAMERA,
    NODE_NAME,
    SCORE_MAPS_FILE,
    DatasetParams,
    read_metrics,
)

FIGURES = "figures"
STRIP_FILE = "overlay_strip.png"
GIF_FILE = "overlay_stream.gif"
SUMMARY_FILE = "summary.json"


def fmt(value: Any, digits: int = 4) -> str:
    """A number for the report (``n/a`` for None)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def latency(m: dict[str, Any]) -> str:
    """``p50 / p90 / p99`` latency in ms."""
    lat = m["latency_ms"]
    return " / ".join(fmt(lat[k], 1) for k in ("p50", "p90", "p99"))


@dataclass
class LiveParity:
    """Node score maps vs the offline torch maps of the same frames."""

    n_frames: int
    max_abs_diff: float | None


def frame_index(stamp_ns: int, rate_hz: float) -> int:
    """Test-split index of a bag frame from its stamp (frame i is stamped start + i / rate)."""
    return round((stamp_ns - BAG_START_S * 1_000_000_000) * rate_hz / 1e9)


def live_parity(rec: Recording, scores: ScoreMaps, rate_hz: float) -> LiveParity:
    """Largest |node score - offline torch score| over the frames the node answered."""
    diffs = []
    for stamp, smap in rec.score_maps.items():
        index = frame_index(stamp, rate_hz)
        if 0 <= index < len(scores.maps) and smap.shape == scores.maps[index].shape:
            diffs.append(float(np.nanmax(np.abs(smap - scores.maps[index]))))
    return LiveParity(len(diffs), max(diffs) if diffs else None)


def overlay_gif(rec: Recording, dataset: FolderDataset, settings: DemoSettings, path: Path) -> int:
    """The node's overlay stream as received (dropped frames are missing, as in RViz); returns frames."""
    stamps = sorted(rec.overlays)
    period_ms = 1000.0 / (settings.bag_rate_hz * settings.rate_factor)
    latency_by_stamp = {r["stamp_ns"]: r["latency_ms"] for r in rec.results}
    frames, durations = [], []
    for i, stamp in enumerate(stamps):
        index = frame_index(stamp, settings.bag_rate_hz)
        overlay = rec.overlays[stamp]
        if 0 <= index < len(dataset):
            image = dataset.load_image(index)
            reference = gt_outline(image, dataset.load_mask(index, image.shape[:2]))
        else:
            reference = np.zeros_like(overlay)
        if reference.shape != overlay.shape:
            reference = np.zeros_like(overlay)
        node_ms = latency_by_stamp.get(stamp)
        caption = f"frame {index + 1}/{len(dataset)}" + (f"  model {node_ms:.0f} ms" if node_ms else "")
        frames.append(stream_frame(overlay, reference, caption, settings.gif_scale))
        following = (
            stamps[i + 1] if i + 1 < len(stamps) else stamp + round(period_ms * 1e6 * settings.rate_factor)
        )
        durations.append((following - stamp) / 1e6 / settings.rate_factor)
    write_gif(frames, durations, path)
    return len(frames)


def node_diagnostics(rec: Recording) -> dict[str, Any]:
    """The node's last camera status from /diagnostics (empty if none was recorded)."""
    for name, status in rec.diagnostics.items():
        if name.endswith(f": {CAMERA}"):
            return status
    return {}


def summary_lines(
    settings: DemoSettings,
    params: DatasetParams,
    torch_m: dict[str, Any],
    ort_m: dict[str, Any],
    agreement: dict[str, Any],
    live_m: dict[str, Any],
    parity: LiveParity,
) -> list[str]:
    """The five lines printed at the end."""
    thr = torch_m.get("threshold") or {}
    live = live_m.get("live") or {}
    d = agreement["metrics"]
    return [
        f"report: {settings.out / 'report.html'} (and report.md)",
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
        f"node score maps vs offline torch: max |diff| {fmt(parity.max_abs_diff, 6)} over {parity.n_frames} "
        f"frames; overlays: {settings.out / FIGURES / STRIP_FILE}, {settings.out / FIGURES / GIF_FILE}",
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
    scores = ScoreMaps.load(settings.eval_torch / SCORE_MAPS_FILE)
    dataset = FolderDataset(settings.test_split, require_masks=True)
    rec = read_recording(settings.live / "recorded", NODE_NAME, CAMERA)
    score_range = display_range(scores.maps)
    strip_rows = pick_strip_frames(dataset, settings.strip_frames)
    panel = max(224, max(dataset.load_image(0).shape[:2]))
    overlay_strip(dataset, scores, strip_rows, score_range, out / FIGURES / STRIP_FILE, panel_side=panel)
    n_gif = overlay_gif(rec, dataset, settings, out / FIGURES / GIF_FILE)
    parity = live_parity(rec, scores, settings.bag_rate_hz)
    lines = summary_lines(settings, params, torch_m, ort_m, agreement, live_m, parity)
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
    _metrics_section(doc, torch_m, ort_m, live_m, agreement, ckpt)
    _live_section(doc, settings, live_m, rec, parity, n_gif)
    doc.heading("Pixel ROC and precision-recall (torch, test split)")
    doc.images([("ROC", "eval_torch/roc.png"), ("PR", "eval_torch/pr.png")])
    doc.heading("Overlay strip: input | score map | mask | ground truth")
    doc.paragraph(
        f"Frames picked evenly among the anomalous test frames, plus one normal frame; torch backend. "
        f"Score colours span the fixed range {score_range[0]:.3f} (blue) to {score_range[1]:.3f} (red); "
        f"the mask is score >= {scores.threshold:.4f}, the calibrated threshold."
    )
    doc.images([("overlay strip", f"{FIGURES}/{STRIP_FILE}")])
    doc.heading("The node's overlay stream, as RViz shows it")
    doc.paragraph(
        f"Left: `{NODE_NAME}/{CAMERA}/overlay` as recorded during the live replay ({n_gif} frames; frames "
        "the node dropped under its newest-frame policy are missing, as they would be in RViz). Right: the "
        "input with the ground-truth anomalies outlined in green."
    )
    doc.images([("overlay stream", f"{FIGURES}/{GIF_FILE}")])
    _results_section(doc, rec, settings)
    _timing_section(doc, stage_results, threads_used, settings)
    doc.heading("Files")
    doc.bullets(
        [
            "`eval_torch/report.md`, `eval_ort/report.md`, `live/report.md`: the evaluation reports "
            "(worst/best frames) and their `metrics.json`",
            "`live/recorded/`: rosbag2 of the node's result, score_map, mask, overlay and /diagnostics; "
            "`live/node.log`: the node's log",
            "`train/checkpoint/`: the checkpoint (config.json + flow.safetensors); "
            "`onnx/model.onnx`: its ONNX export",
            "`eval_torch/score_maps.npz`: the torch score maps of the test split",
        ]
    )
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html())
    (out / SUMMARY_FILE).write_text(json.dumps({"summary": lines}, indent=2) + "\n")
    return lines


def _metrics_section(
    doc: Document,
    torch_m: dict[str, Any],
    ort_m: dict[str, Any],
    live_m: dict[str, Any],
    agreement: dict[str, Any],
    ckpt: dict[str, Any],
) -> None:
    doc.heading("Metrics on the held-out test split")
    rows = [
        ["pixel AUROC", *(fmt(m["auroc"]) for m in (torch_m, ort_m, live_m))],
        ["pixel AP", *(fmt(m["ap"]) for m in (torch_m, ort_m, live_m))],
        ["pixel FPR at 95% TPR", *(fmt(m["fpr95"]) for m in (torch_m, ort_m, live_m))],
        ["image AUROC", *(fmt(m["image_auroc"]) for m in (torch_m, ort_m, live_m))],
        ["frames evaluated", *(str(m["n_images"]) for m in (torch_m, ort_m, live_m))],
        ["latency p50 / p90 / p99 (ms)", latency(torch_m), latency(ort_m), latency(live_m) + " (end to end)"],
    ]
    for name, key in (
        ("precision at threshold", "precision"),
        ("recall at threshold", "recall"),
        ("IoU", "iou"),
    ):
        rows.append([name, *(fmt((m.get("threshold") or {}).get(key)) for m in (torch_m, ort_m, live_m))])
    doc.table(["metric", "torch (offline)", "onnxruntime (offline)", "anomaly_node (live, torch)"], rows)
    checked = ", ".join(
        f"|d{k}| {v['abs_diff']:.2e}" for k, v in agreement["metrics"].items() if v["abs_diff"] is not None
    )
    doc.paragraph(
        f"ONNX Runtime vs torch: {checked}; AUROC and AP must agree within {agreement['tolerance']:g}: "
        f"**{'agree' if agreement['agree'] else 'DISAGREE'}**. Offline latency is the backend's predict time "
        "per frame (preprocess + model + resize back); live latency is publish to result receive."
    )
    threshold = ckpt.get("threshold")
    val = (ckpt.get("provenance") or {}).get("val_metrics") or {}
    text = f"Calibrated pixel threshold (checkpoint): {fmt(threshold, 4)}"
    if val:
        text += "; validation split: " + ", ".join(
            f"{k} {fmt(v)}" for k, v in val.items() if isinstance(v, float)
        )
    doc.paragraph(text + ".")


def _live_section(
    doc: Document,
    settings: DemoSettings,
    live_m: dict[str, Any],
    rec: Recording,
    parity: LiveParity,
    n_gif: int,
) -> None:
    live = live_m.get("live") or {}
    diag = node_diagnostics(rec)
    doc.heading("Live replay through anomaly_node")
    doc.paragraph(
        f"The test split was written to a rosbag (`flowclas-bag`, {settings.bag_rate_hz:g} Hz) and played "
        f"into the real node (`flowclas-eval --live`, rate factor {settings.rate_factor:g}) with "
        "sensor-data QoS (best effort, depth 1: the node always takes the newest frame and never queues) "
        "and /diagnostics on."
    )
    doc.table(
        [
            "published",
            "answered",
            "dropped (newest-frame)",
            "end-to-end p50 / p90 / p99 (ms)",
            "node model p50 (ms)",
        ],
        [
            [
                fmt(live.get("n_published")),
                fmt(live.get("n_answered")),
                fmt(live.get("n_dropped")),
                latency(live_m),
                fmt((live_m.get("model_ms") or {}).get("p50"), 1),
            ]
        ],
    )
    if diag:
        keys = (
            "frames_received",
            "frames_processed",
            "frames_dropped",
            "processed_rate_hz",
            "latency_p50_ms",
        )
        doc.paragraph(
            "Last /diagnostics status of the node: "
            + ", ".join(f"{k} {diag[k]}" for k in keys if k in diag)
            + f" (level {diag.get('level')}: {diag.get('message', '')})."
        )
    counts = ", ".join(f"{k} {v}" for k, v in rec.counts.items())
    doc.paragraph(
        f"Recorded from the node: {counts} messages. Node score maps vs the offline torch maps of the same "
        f"frames: max |diff| {fmt(parity.max_abs_diff, 6)} over {parity.n_frames} frames."
    )


def _results_section(doc: Document, rec: Recording, settings: DemoSettings) -> None:
    doc.heading("AnomalyResult messages (first 12)")
    rows = []
    for r in rec.results[:12]:
        regions = "; ".join(
            f"{g['width']}x{g['height']} at ({g['x']},{g['y']}) peak {g['peak_score']:.3f}"
            for g in r["regions"][:3]
        )
        rows.append(
            [
                str(frame_index(r["stamp_ns"], settings.bag_rate_hz) + 1),
                f"{r['image_score']:.4f}",
                "yes" if r["is_anomalous"] else "no",
                f"{r['anomalous_fraction']:.4f}",
                f"{len(r['regions'])}" + (f": {regions}" if regions else ""),
                f"{r['latency_ms']:.1f}",
            ]
        )
    doc.table(["frame", "image score", "anomalous", "anomalous fraction", "regions", "model ms"], rows)


def _timing_section(
    doc: Document, stage_results: Sequence[StageResult], threads_used: dict[str, int], settings: DemoSettings
) -> None:
    doc.heading("Stage wall times")
    rows = []
    if settings.bootstrap_s is not None:
        rows.append(["bootstrap", "ran (make)", f"{settings.bootstrap_s:.1f}", ""])
    for r in stage_results:
        produced = "" if r.ran or r.produced_wall_s is None else f"{r.produced_wall_s:.1f}"
        rows.append([r.name, "ran" if r.ran else "up to date", f"{r.wall_s:.1f}", produced])
    doc.table(["stage", "this run", "wall time (s)", "when produced (s)"], rows)
    if threads_used:
        doc.paragraph(
            "Torch threads per stage (picked from the cores other jobs left free): "
            + ", ".join(f"{k} {v}" for k, v in threads_used.items())
            + "."
        )
