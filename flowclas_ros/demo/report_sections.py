"""The tables and paragraphs of the demo report (metrics, live replay, results, stage times)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flowclas_ros.demo.document import Document
from flowclas_ros.demo.recording import Recording
from flowclas_ros.demo.runner import StageResult
from flowclas_ros.demo.settings import DemoSettings
from flowclas_ros.evaluation.report import fmt

CAMERA_STATUS_SUFFIX = ": camera"


def latency(m: dict[str, Any]) -> str:
    """``p50 / p90 / p99`` latency in ms."""
    lat = m["latency_ms"]
    return " / ".join(fmt(lat[k], 1) for k in ("p50", "p90", "p99"))


def camera_statuses(rec: Recording) -> list[dict[str, Any]]:
    """The node's /diagnostics statuses of the camera, in order (empty if none was recorded)."""
    for name, statuses in rec.diagnostics.items():
        if name.endswith(CAMERA_STATUS_SUFFIX):
            return statuses
    return []


def diagnostics_text(statuses: list[dict[str, Any]]) -> str:
    """Totals from the last status, rates and latency from the busiest one during the replay."""
    last = statuses[-1]
    busiest = max(statuses, key=lambda st: _number(st.get("processed_rate_hz")))
    totals = ", ".join(
        f"{k} {last[k]}" for k in ("frames_received", "frames_processed", "frames_dropped") if k in last
    )
    during = ", ".join(
        f"{k} {busiest[k]}"
        for k in ("input_rate_hz", "processed_rate_hz", "latency_p50_ms", "model_p50_ms")
        if k in busiest
    )
    return (
        f"/diagnostics from the node ({len(statuses)} camera statuses): totals {totals}; "
        f"while frames arrived: {during}, level {busiest['level']} (0 OK, 1 WARN, 2 ERROR): "
        f"{busiest.get('message', '')}."
    )


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return -1.0


def metrics_section(
    doc: Document,
    torch_m: dict[str, Any],
    ort_m: dict[str, Any],
    live_m: dict[str, Any],
    agreement: dict[str, Any],
    ckpt: dict[str, Any],
) -> None:
    """Offline torch / ONNX Runtime and live metrics side by side, the agreement check, the threshold."""
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
            f"{k} {fmt(val[k])}" for k in ("auroc", "ap", "fpr95", "image_auroc") if k in val
        )
    doc.paragraph(text + ".")


def live_section(
    doc: Document,
    settings: DemoSettings,
    live_m: dict[str, Any],
    rec: Recording,
) -> None:
    """Live replay: counts, latency, the node's last /diagnostics status, what was recorded."""
    live = live_m.get("live") or {}
    statuses = camera_statuses(rec)
    doc.heading("Live replay through anomaly_node")
    doc.paragraph(
        f"The test split was written to a rosbag (`flowclas-bag`, a {settings.bag_rate_hz:g} Hz camera). The "
        "demo started the real `anomaly_node` (`flowclas-node`, torch backend) with sensor-data QoS (best "
        "effort, depth 1: it always takes the newest frame and never queues) and /diagnostics every second, "
        "recorded its outputs, and `flowclas-eval --live --attach` played the bag into it at "
        f"{settings.rate_factor:g}x the recorded rate. Frames that arrive while the model is busy are "
        "dropped, so latency stays bounded when the camera is faster than the model."
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
    if statuses:
        doc.paragraph(diagnostics_text(statuses))
    counts = ", ".join(f"{k} {v}" for k, v in rec.counts.items())
    text = f"Recorded from the node (`live/recorded/`): {counts} messages."
    answered = live.get("n_answered")
    if answered is not None and min(rec.counts[k] for k in ("result", "score_map", "mask")) < answered:
        text += (
            f" The node answered {answered} frames; its image outputs keep only the newest message "
            "(depth 1), so the recorder, busy writing, can miss one; the figures use the frames it has."
        )
    doc.paragraph(text)


def results_section(doc: Document, rec: Recording, frame_number: Callable[[int], int]) -> None:
    """The first AnomalyResult messages; ``frame_number`` maps a stamp to the test frame's number."""
    doc.heading("AnomalyResult messages (first 12)")
    rows = []
    for r in rec.results[:12]:
        regions = "; ".join(
            f"{g['width']}x{g['height']} at ({g['x']},{g['y']}) peak {g['peak_score']:.3f}"
            for g in r["regions"][:3]
        )
        rows.append(
            [
                str(frame_number(r["stamp_ns"])),
                f"{r['image_score']:.4f}",
                "yes" if r["is_anomalous"] else "no",
                f"{r['anomalous_fraction']:.4f}",
                f"{len(r['regions'])}" + (f": {regions}" if regions else ""),
                f"{r['model_ms']:.1f}",
            ]
        )
    doc.table(["frame", "image score", "anomalous", "anomalous fraction", "regions", "model ms"], rows)


def timing_section(
    doc: Document,
    stage_results: Sequence[StageResult],
    threads_used: dict[str, int],
    bootstrap_s: float | None,
) -> None:
    """Wall time per stage in this invocation (and of the run that produced a skipped stage)."""
    doc.heading("Stage wall times")
    rows = []
    if bootstrap_s is not None:
        rows.append(["bootstrap", "ran (make)", f"{bootstrap_s:.1f}", ""])
    for r in stage_results:
        produced = "" if r.ran or r.produced_wall_s is None else f"{r.produced_wall_s:.1f}"
        rows.append([r.name, "ran" if r.ran else "up to date", f"{r.wall_s:.1f}", produced])
    doc.table(["stage", "this run", "wall time (s)", "when produced (s)"], rows)
    if threads_used:
        doc.paragraph(
            "Torch threads per stage: " + ", ".join(f"{k} {v}" for k, v in threads_used.items()) + "."
        )
