"""Run logs: ``RUN_DIR/log.csv`` always, TensorBoard when installed; the git commit recorded in provenance."""

from __future__ import annotations

import csv
import logging
import subprocess
from pathlib import Path
from typing import Any

import flowclas_ros

logger = logging.getLogger(__name__)

COLUMNS = (
    "step",
    "epoch",
    "time_s",
    "lr",
    "loss",
    "nll",
    "con",
    "anchors_outlier",
    "images_per_s",
    "val_ap",
    "val_auroc",
    "val_fpr95",
    "val_image_auroc",
    "val_threshold",
    "beta1",
    "seg_ce",
    "seg_lovasz",
)


class RunLog:
    """Appends rows to ``log.csv`` (and TensorBoard scalars) on the main process.

    On resume, rows after the resumed step (written after the last saved
    state, then lost with the process) are dropped so the log has no duplicates.

    Args:
        run_dir: The run directory.
        resume_step: Step the run continues from (0 for a fresh run).
        enabled: False on non-main processes (then every call is a no-op).
    """

    def __init__(self, run_dir: Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "log.csv"
        self._tb = None
        if not enabled:
            return
        kept: list[dict[str, str]] = []
        if self.path.is_file() and resume_step > 0:
            with open(self.path, newline="") as handle:
                kept = [
                    row
                    for row in csv.DictReader(handle)
                    if row.get("step") and int(row["step"]) <= resume_step
                ]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, COLUMNS)
            writer.writeheader()
            writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in kept)
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:
            logger.info("tensorboard is not installed; logging to %s only", self.path)

    def write(self, row: dict[str, Any]) -> None:
        """Appends one row (missing columns stay empty; floats are written with 6 significant digits)."""
        if not self.enabled:
            return
        clean = {k: _fmt(row.get(k)) for k in COLUMNS}
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, COLUMNS).writerow(clean)
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key.replace("val_", "val/", 1), value, step)
            self._tb.flush()

    def close(self) -> None:
        """Closes the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def git_commit() -> str | None:
    """The commit of the flowclas_ros source tree, if it is a git checkout (``+dirty`` when modified)."""
    src = Path(flowclas_ros.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None
