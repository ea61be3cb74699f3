"""Evaluation outputs: ``metrics.json`` (docs/ARCHITECTURE.md contract) and a Markdown report with plots.

``metrics.json`` always holds the contract keys ``auroc``, ``ap``, ``fpr95``
(pixel level, ignore label excluded), ``image_auroc``, ``n_images`` and
``latency_ms`` (``p50``, ``p90``, ``p99``); a metric that cannot be computed
(e.g. no masks) is ``null``. ``latency_ms`` is, offline, the per-frame
``backend.predict`` time (preprocess + model + resize back; a batch's time
divided by its size) and, live, publish time to result receive time
(``latency_kind`` says which). The other keys are extensions: threshold
summary, counts, throughput, bag read statistics, live-replay numbers and
``warnings`` (``partial`` is true when a damaged bag was only partly read).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

import flowclas_ros
from flowclas_ros.evaluation.accumulator import EvalAccumulator, percentiles
from flowclas_ros.evaluation.examples import Example

CONTRACT_KEYS = ("auroc", "ap", "fpr95", "image_auroc", "n_images", "latency_ms")
"""Top-level keys of metrics.json fixed by docs/ARCHITECTURE.md."""
LATENCY_KEYS = ("p50", "p90", "p99")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
ROC_FILE = "roc.png"
PR_FILE = "pr.png"
WORST_FILE = "worst_frames.png"
BEST_FILE = "best_frames.png"
_CLIPPED_WARN_FRACTION = 1e-3
_OVERLAY_MIN_SIDE = 320


def build_metrics(
    acc: EvalAccumulator,
    *,
    source: dict[str, Any],
    checkpoint: str | None,
    backend: str | None,
    device: str | None,
    threshold: float | None,
    threshold_source: str,
    latency_kind: str,
    throughput: dict[str, Any] | None = None,
    bag: dict[str, Any] | None = None,
    live: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Assemble the metrics.json document.

    Args:
        acc: The filled accumulator.
        source: Where the frames came from (``FolderFrames/BagFrames.describe()``).
        checkpoint: Checkpoint path.
        backend: Backend kind.
        device: Device string.
        threshold: Threshold for the precision/recall/IoU summary (None: 5 % pixel-FPR threshold).
        threshold_source: Where ``threshold`` came from (``--threshold``, ``checkpoint``, ``node``).
        latency_kind: What ``latency_ms`` measures (``predict`` or ``end_to_end``).
        throughput: ``RunTiming.as_dict()`` for offline runs.
        bag: ``BagReadStats.as_dict()`` for bag sources.
        live: Live-replay numbers.
        warnings: Problems to report (more are added here, e.g. clipped scores).
    """
    pixel = acc.pixel_results()
    image = acc.images.compute()
    latency = percentiles(acc.latency_ms)
    warnings = list(warnings or [])
    n_valid = pixel["n_pos"] + pixel["n_neg"]
    if n_valid and pixel["n_clipped"] / n_valid > _CLIPPED_WARN_FRACTION:
        warnings.append(
            f"{pixel['n_clipped']} of {n_valid} pixel scores fell outside the histogram range "
            f"{pixel['score_range']} and were clipped into its end bins (pass --score-range to widen it)"
        )
    if acc.counts.n_fully_ignored:
        warnings.append(f"{acc.counts.n_fully_ignored} frame(s) have masks that are entirely ignore (255)")
    partial = bool(bag and bag.get("problems"))
    return {
        "auroc": pixel["auroc"],
        "ap": pixel["ap"],
        "fpr95": pixel["fpr95"],
        "image_auroc": image["image_auroc"],
        "n_images": acc.counts.n_frames,
        "latency_ms": {k: latency[k] for k in LATENCY_KEYS},
        "latency_kind": latency_kind,
        "model_ms": percentiles(acc.model_ms),
        "threshold": acc.threshold_summary(threshold, threshold_source),
        "pixel": {k: pixel[k] for k in pixel if k not in ("auroc", "ap", "fpr95")},
        "frames": {
            **acc.counts.__dict__,
            "n_labelled_images": image["n_images"],
            "n_anomalous_images": image["n_anomalous_images"],
        },
        "throughput": throughput,
        "source": source,
        "checkpoint": checkpoint,
        "backend": backend,
        "device": device,
        "bag": bag,
        "live": live,
        "partial": partial,
        "warnings": warnings,
        "flowclas_ros_version": flowclas_ros.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_metrics(metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir/metrics.json`` (strict JSON)."""
    path = out_dir / METRICS_FILE
    path.write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------- plots


def _plot_curves(acc: EvalAccumulator, metrics: dict[str, Any], out_dir: Path) -> list[str]:
    """ROC and PR curves as PNG; returns the file names written (none without both classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if acc.pixel is None or metrics["auroc"] is None:
        return []
    curves = acc.pixel.curves()
    roc, pr = curves["roc"], curves["pr"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(roc["fpr"], roc["tpr"], lw=1.5, label=f"AUROC {metrics['auroc']:.4f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    if metrics["fpr95"] is not None:
        ax.axhline(0.95, ls=":", lw=0.8, color="red", label=f"FPR@95%TPR {metrics['fpr95']:.4f}")
    ax.set(xlabel="false positive rate (pixels)", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title("Pixel ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / ROC_FILE, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(pr["recall"], pr["precision"], lw=1.5, label=f"AP {metrics['ap']:.4f}")
    base = metrics["pixel"]["n_pos"] / max(1, metrics["pixel"]["n_pos"] + metrics["pixel"]["n_neg"])
    ax.axhline(base, ls="--", lw=0.8, color="grey", label=f"chance {base:.4f}")
    thr = metrics.get("threshold")
    if thr and thr.get("recall") is not None and thr.get("precision") is not None:
        ax.plot(
            [thr["recall"]], [thr["precision"]], "o", color="red", label=f"threshold {thr['threshold']:.4g}"
        )
    ax.set(xlabel="recall (anomalous pixels)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title("Pixel precision-recall")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / PR_FILE, dpi=110)
    plt.close(fig)
    return [ROC_FILE, PR_FILE]


def _mask_rgb(mask: np.ndarray) -> np.ndarray:
    """Labels as colours: normal black, anomaly white, ignore grey."""
    out = np.zeros((*mask.shape, 3), np.uint8)
    out[mask == 1] = 255
    out[mask == 255] = 110
    return out


def _overlay(example: Example, threshold: float | None, score_range: tuple[float, float]) -> np.ndarray:
    """The node's overlay (heat map, region boxes, label) of one example, upscaled if small."""
    import cv2

    from flowclas_ros.runtime.postprocess import find_regions, render_overlay

    image, scores = example.image, example.score_map
    scale = _OVERLAY_MIN_SIDE / max(image.shape[:2])
    if scale > 1.0:  # small frames: upscale so the label stays legible
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        scores = cv2.resize(scores, size, interpolation=cv2.INTER_LINEAR)
    if threshold is None:
        return render_overlay(image, scores, 0.0, None, score_range=score_range, label=False)
    regions = find_regions(scores, threshold, max_regions=5)
    return render_overlay(
        image, scores, threshold, regions, score_range=score_range, image_score=example.image_score
    )


def _plot_examples(
    examples: list[Example],
    title: str,
    key_name: str,
    threshold: float | None,
    score_range: tuple[float, float],
    path: Path,
) -> None:
    """A grid, one row per frame: overlay, score map, ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(examples)
    aspect = examples[0].image.shape[0] / examples[0].image.shape[1]
    fig, axes = plt.subplots(rows, 3, figsize=(9.6, 3.2 * aspect * rows + 0.6), squeeze=False)
    for row, ex in zip(axes, examples):
        row[0].imshow(_overlay(ex, threshold, score_range))
        row[0].set_title(f"{ex.name}\n{key_name} {ex.key:.4f}", fontsize=8)
        im = row[1].imshow(ex.score_map, cmap="jet", vmin=score_range[0], vmax=score_range[1])
        row[1].set_title(f"score map (image score {ex.image_score:.4g})", fontsize=8)
        fig.colorbar(im, ax=row[1], fraction=0.046, pad=0.02)
        if ex.mask is not None:
            row[2].imshow(_mask_rgb(ex.mask))
            row[2].set_title("ground truth (white anomaly, grey ignore)", fontsize=8)
        else:
            row[2].set_title("no mask", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------- markdown


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a report (``n/a`` for None, floats with ``digits`` decimals)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown(metrics: dict[str, Any], figures: dict[str, str], ranking: str) -> str:
    m = metrics
    lines = ["# flowclas_ros evaluation report", ""]
    src = m["source"]
    lines += [
        f"- source: {src.get('kind')} `{src.get('path')}`"
        + (f", topic `{src['image_topic']}`" if src.get("image_topic") else ""),
        *([f"- dataset: {src['dataset']}; labels: {src['label_convention']}"] if src.get("dataset") else []),
        f"- checkpoint: `{m['checkpoint']}`" if m["checkpoint"] else "- checkpoint: the attached node's",
        f"- backend: {m['backend']} on {m['device']}",
        f"- created: {m['created']} (flowclas_ros {m['flowclas_ros_version']})",
        "",
    ]
    for text in m["warnings"]:
        lines.append(f"> **WARNING:** {text}")
    if m["warnings"]:
        lines.append("")
    lat, mod = m["latency_ms"], m["model_ms"]
    live_run = m["latency_kind"] == "end_to_end"
    lat_label = "end-to-end latency (publish to result)" if live_run else "latency (preprocess + model)"
    model_label = "node inference latency" if live_run else "model time"
    lines += [
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        f"| pixel AUROC | {fmt(m['auroc'])} |",
        f"| pixel AP | {fmt(m['ap'])} |",
        f"| pixel FPR at 95% TPR | {fmt(m['fpr95'])} |",
        f"| image AUROC | {fmt(m['image_auroc'])} |",
        f"| images evaluated | {m['n_images']} |",
        f"| {lat_label} p50 / p90 / p99 (ms) | {fmt(lat['p50'], 1)} / {fmt(lat['p90'], 1)} / "
        f"{fmt(lat['p99'], 1)} |",
        f"| {model_label} p50 / mean (ms) | {fmt(mod['p50'], 1)} / {fmt(mod['mean'], 1)} |",
    ]
    tp = m.get("throughput")
    if tp and tp.get("images_per_s") is not None:
        lines.append(
            f"| throughput (images/s, whole loop) | {fmt(tp['images_per_s'], 2)} "
            f"(model {fmt(100 * tp['model_fraction'], 1)} % of the time) |"
        )
    px = m["pixel"]
    lines += [
        f"| pixels anomalous / normal / ignored | {px['n_pos']} / {px['n_neg']} / {px['n_ignored']} |",
        "",
        "The ignore label (255) is excluded from every pixel metric. Pixel metrics come from a "
        f"fine histogram over scores {px['score_range']} (AUROC binning error bound "
        f"{fmt(px['auroc_error_bound'], 6)}; {px['n_clipped']} scores clipped into the end bins).",
        "",
    ]
    thr = m.get("threshold")
    if thr:
        lines += [
            "## Threshold summary",
            "",
            "| threshold | from | precision | recall | IoU | FPR |",
            "|---|---|---|---|---|---|",
            f"| {thr['threshold']:.6g} | {thr['source']} | {fmt(thr['precision'])} | "
            f"{fmt(thr['recall'])} | {fmt(thr['iou'])} | {fmt(thr['fpr'])} |",
            "",
        ]
    fr = m["frames"]
    lines += [
        "## Frames",
        "",
        f"- evaluated: {fr['n_frames']}; with mask: {fr['n_with_mask']}; without mask (unpaired): "
        f"{fr['n_unpaired']}; labelled anomalous images: {fr['n_anomalous_images']} of "
        f"{fr['n_labelled_images']}",
    ]
    bag = m.get("bag")
    if bag:
        lines += [
            f"- bag: {bag['n_frames']} of {bag['n_image_messages']} image messages read; masks paired "
            f"{bag['n_paired_exact']} exact + {bag['n_paired_nearest']} nearest; "
            f"unpaired {bag['n_unpaired']}; "
            f"undecodable {bag['n_decode_errors']}; mask messages {bag['n_mask_messages']} "
            f"({bag['n_masks_unused']} unused); damaged: {'YES' if bag['problems'] else 'no'}",
        ]
    live = m.get("live")
    if live:
        lines += [
            "",
            "## Live replay through the node",
            "",
            "| published | answered | dropped (newest-frame policy) | score map missing | rate factor |",
            "|---|---|---|---|---|",
            f"| {live['n_published']} | {live['n_answered']} | {live['n_dropped']} | "
            f"{live['n_score_map_missing']} | {live['rate_factor']} |",
            "",
            f"Node: `{live['node']}`, results on `{live['result_topic']}`. Node-reported inference "
            f"latency p50 {fmt(m['model_ms']['p50'], 1)} ms.",
        ]
    lines.append("")
    if ROC_FILE in figures.values():
        lines += ["## Curves", "", f"![ROC]({ROC_FILE}) ![PR]({PR_FILE})", ""]
    how = (
        "per-frame pixel AUROC"
        if ranking == "frame_auroc"
        else "image score (no frame has both normal and anomalous pixels)"
    )
    if "worst" in figures:
        lines += [
            "## Worst frames",
            "",
            f"Ranked by {how}, lowest first.",
            "",
            f"![worst]({figures['worst']})",
            "",
        ]
    if "best" in figures:
        lines += [
            "## Best frames",
            "",
            f"Ranked by {how}, highest first.",
            "",
            f"![best]({figures['best']})",
            "",
        ]
    return "\n".join(lines)


def write_report(acc: EvalAccumulator, metrics: dict[str, Any], out_dir: Path) -> Path:
    """Write the plots and ``out_dir/report.md``; returns the report path."""
    figures: dict[str, str] = {}
    for name in _plot_curves(acc, metrics, out_dir):
        figures[name] = name
    ranking, worst, best = acc.examples()
    thr = metrics.get("threshold")
    threshold = thr["threshold"] if thr else None
    if np.isfinite(acc.score_min) and np.isfinite(acc.score_max):
        score_range = (acc.score_min, max(acc.score_max, acc.score_min + 1e-6))
        key_name = "frame AUROC" if ranking == "frame_auroc" else "image score"
        if worst:
            _plot_examples(worst, "Worst frames", key_name, threshold, score_range, out_dir / WORST_FILE)
            figures["worst"] = WORST_FILE
        if best:
            _plot_examples(best, "Best frames", key_name, threshold, score_range, out_dir / BEST_FILE)
            figures["best"] = BEST_FILE
    path = out_dir / REPORT_FILE
    path.write_text(_markdown(metrics, figures, ranking))
    return path
