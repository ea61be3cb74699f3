"""Model selection per validation metric: the best AP and the best FPR95 model, each in its own directory.

The official configs keep one checkpoint per monitor (``monitor1``: FPR95,
min; ``monitor2``: AP, max). ``RUN_DIR/checkpoint/`` keeps its contract
meaning (the best AP, else the latest model); with
``checkpoint_per_metric`` the run also keeps ``checkpoint_best_ap/`` and
``checkpoint_best_fpr95/``.
"""

from __future__ import annotations

from typing import Any

from flowclas_ros.training.validation import ValResult

BEST_AP_DIR = "checkpoint_best_ap"
BEST_FPR95_DIR = "checkpoint_best_fpr95"
PER_METRIC = (("ap", "max", BEST_AP_DIR), ("fpr95", "min", BEST_FPR95_DIR))


def improved(metrics: dict[str, Any], best: dict[str, Any], step: int) -> list[str]:
    """Directories whose metric improved with ``metrics``; updates ``best`` in place.

    Args:
        metrics: Validation metrics (``ap``, ``fpr95``; None when undefined).
        best: ``{metric: {"value": float, "step": int}}`` so far (JSON-serialisable, saved in the state).
        step: The step of ``metrics``.

    Returns:
        The checkpoint directory names to (re)write, in :data:`PER_METRIC` order.
    """
    out = []
    for metric, mode, directory in PER_METRIC:
        value = metrics.get(metric)
        if value is None:
            continue
        previous = best.get(metric)
        better = previous is None or (
            value > previous["value"] if mode == "max" else value < previous["value"]
        )
        if better:
            best[metric] = {"value": float(value), "step": int(step)}
            out.append(directory)
    return out


def val_columns(result: ValResult) -> dict[str, Any]:
    """The validation columns of a ``log.csv`` row."""
    m = result.metrics
    return {
        "val_ap": m.get("ap"),
        "val_auroc": m.get("auroc"),
        "val_fpr95": m.get("fpr95"),
        "val_image_auroc": m.get("image_auroc"),
        "val_threshold": result.threshold,
    }


def is_better(result: ValResult, best: dict[str, Any]) -> bool:
    """Higher val AP wins; without an AP (no anomalous val pixels) the latest model is kept."""
    ap = result.metrics.get("ap")
    if ap is None or best["step"] < 0:
        return True
    return best["ap"] is None or ap > best["ap"]
