"""What the demo runs: sizes, paths and the knobs of each stage (full demo or ``--tiny`` for tests)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "config" / "train" / "demo.yaml"
DEFAULT_OUT = REPO_ROOT / "runs" / "demo"
THREADS_ENV = "FLOWCLAS_DEMO_THREADS"

# The tiny variant (the test in `make test`): 56x56 frames, a 2-step flow, a handful of steps.
TINY_TRAIN_OVERRIDES = (
    "model.preprocess.input_size=[56, 56]",
    "model.flow.steps=2",
    "model.flow.proj_dim=16",
    "model.flow.hidden_ratio=0.25",
    "oe.area_range=[0.05, 0.2]",
    "optim.warmup_steps=2",
    "cache.pool_size=1",
    "batch_size=2",
    "steps=4",
    "checkpoint_every=2",
    "val_every=2",
    "log_every=1",
)


@dataclass
class DatasetSize:
    """Frames per split and their size; ``None`` fields come from the training config's ``data.generate``."""

    seed: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    size: tuple[int, int] | None = None


@dataclass
class DemoSettings:
    """Everything one demo run needs.

    Attributes:
        out: Run folder (``runs/demo``): ``data/``, ``train/``, ``eval_torch/``, ``live/``,
            ``onnx/``, ``eval_ort/``, ``report.md``, ``report.html``.
        config: Training config (its ``data.generate`` section sizes the dataset).
        dataset: Overrides of the generated dataset's size (tiny runs).
        train_overrides: Extra ``--set`` items for ``flowclas-train``.
        threads: CPU threads for torch; 0 picks them before each stage (:func:`pick_threads`).
        bag_rate_hz: Camera rate recorded into the test bag.
        rate_factor: Live replay speed relative to the bag (1 = real time).
        ort_tolerance: Largest allowed |torch - onnxruntime| difference of AUROC and AP.
        strip_frames: Frames in the overlay strip.
        gif_side: Smaller inputs are drawn this many pixels wide (integer upscaling) in the GIF so labels
            stay legible; larger ones at their own size, as RViz shows them (the HTML enlarges it).
        progress: Show the CLIs' progress bars.
        bootstrap_s: Wall time of the bootstrap (measured by ``make demo``), for the summary.
    """

    out: Path = DEFAULT_OUT
    config: Path = DEFAULT_CONFIG
    dataset: DatasetSize = field(default_factory=DatasetSize)
    train_overrides: tuple[str, ...] = ()
    threads: int = 0
    bag_rate_hz: float = 10.0
    rate_factor: float = 1.0
    ort_tolerance: float = 1e-3
    strip_frames: int = 6
    gif_side: int = 224
    progress: bool = True
    bootstrap_s: float | None = None

    @property
    def data(self) -> Path:
        """Generated dataset root (``train/``, ``val/``, ``test/``)."""
        return self.out / "data"

    @property
    def test_split(self) -> Path:
        """The held-out split every evaluation uses."""
        return self.data / "test"

    @property
    def train_dir(self) -> Path:
        """``flowclas-train`` run folder."""
        return self.out / "train"

    @property
    def checkpoint(self) -> Path:
        """The trained, calibrated checkpoint."""
        return self.train_dir / "checkpoint"

    @property
    def eval_torch(self) -> Path:
        """Offline evaluation with the torch backend."""
        return self.out / "eval_torch"

    @property
    def live(self) -> Path:
        """Live replay through the node."""
        return self.out / "live"

    @property
    def onnx_model(self) -> Path:
        """Exported ONNX model."""
        return self.out / "onnx" / "model.onnx"

    @property
    def eval_ort(self) -> Path:
        """Offline evaluation with ONNX Runtime."""
        return self.out / "eval_ort"

    @property
    def stamps(self) -> Path:
        """Stage stamps."""
        return self.out / ".stamps"


def tiny_settings(out: Path) -> DemoSettings:
    """The demo at test size: 8 train / 4 val / 4 test frames of 56x56, 4 training steps."""
    return DemoSettings(
        out=out,
        dataset=DatasetSize(seed=1, n_train=8, n_val=4, n_test=4, size=(56, 56)),
        train_overrides=TINY_TRAIN_OVERRIDES,
        threads=1,
        strip_frames=4,
        progress=False,
    )


def cpu_busy(sample_s: float = 1.0) -> float:
    """Cores busy now: two ``/proc/stat`` reads ``sample_s`` apart (elsewhere the 1-min load average).

    Sampled while the demo itself waits, so it measures the other jobs on the machine,
    not the demo's previous stage (which the load average would still remember).
    """

    def read() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    first = read()
    if first is None:
        return os.getloadavg()[0]
    time.sleep(sample_s)
    second = read()
    if second is None or second[1] <= first[1]:
        return os.getloadavg()[0]
    return (os.cpu_count() or 1) * (second[0] - first[0]) / (second[1] - first[1])


def pick_threads(cpu_count: int | None = None, busy: float | None = None) -> int:
    """Torch threads for the next stage: the cores other jobs leave free (rounded), at least 1.

    With every core busy, torch's OpenMP threads wait on each other: 2 threads on a
    loaded 2-core machine ran slower than 1, while on an idle machine all cores are
    faster. ``FLOWCLAS_DEMO_THREADS`` overrides.
    """
    forced = os.environ.get(THREADS_ENV)
    if forced:
        try:
            value = int(forced)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {forced!r}")
        return value
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    busy = cpu_busy() if busy is None else busy
    return max(1, min(cpus, int(cpus - busy + 0.5)))
