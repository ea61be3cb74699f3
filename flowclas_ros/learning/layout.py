"""The layout of ``learn_dir``: everything a field-learning run writes lives under it.

::

    learn_dir/
        history.json            serving-model stack and swap events (swap history)
        models/<sha12>/         a model that served before a swap, kept for ~/rollback_model
        exports/                backend exports (ONNX) of swapped-in checkpoints
        runs/<id>/
            run.json            goal, phases, validation figures, outcome
            frames/             rosbag2 of the collected training frames (flowclas-train reads it)
            heldout/            rosbag2 of the held-out frames (validation)
            train/              flowclas-train RUN_DIR: checkpoint/, log.csv
            train.log           the training child's output
            validate.json       validation figures (before / after)
            export/             the new checkpoint exported for the node's backend

The default ``learn_dir`` is ``<checkpoint>.learn`` beside the checkpoint (a directory for
``/models/site_a`` is ``/models/site_a.learn``; for ``/models/site_a.onnx`` it is
``/models/site_a.onnx.learn``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LEARN_SUFFIX = ".learn"
LEARN_TOPIC = "/learn/image_raw"
"""Topic of the collected frames in a run's bags (``/learn/image_raw/compressed`` for compressed)."""


def default_learn_dir(checkpoint: str | Path) -> Path:
    """``<checkpoint>.learn`` beside the checkpoint directory or exported file."""
    path = Path(checkpoint).expanduser()
    return path.parent / (path.name.rstrip("/") + LEARN_SUFFIX)


def resolve_learn_dir(parameter: str, checkpoint: str | Path) -> Path:
    """The ``learn_dir`` parameter, or the default beside ``checkpoint`` when it is empty."""
    return Path(parameter).expanduser().resolve() if parameter else default_learn_dir(checkpoint).resolve()


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, after checking it lies inside ``root`` (a run never writes outside learn_dir).

    Raises:
        ValueError: ``path`` escapes ``root``.
    """
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise ValueError(f"{path} is outside the learn directory {root}")
    return resolved


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes ``data`` as JSON atomically (a temp file renamed over ``path``): never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """Reads a JSON object; an absent file is ``{}``.

    Raises:
        ValueError: The file is not a JSON object (one line, names the file).
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


class RunDir:
    """One run's directory ``learn_dir/runs/<id>`` (created on construction).

    Args:
        learn_dir: The learn directory.
        run_id: Run name; default a UTC timestamp (unique within the directory).
    """

    def __init__(self, learn_dir: Path, run_id: str | None = None):
        self.learn_dir = Path(learn_dir)
        runs = self.learn_dir / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        base = run_id or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name, n = base, 1
        while (runs / name).exists():
            n += 1
            name = f"{base}-{n}"
        self.path = inside(self.learn_dir, runs / name)
        self.path.mkdir()
        self.id = name

    @property
    def frames(self) -> Path:
        """The training frames bag."""
        return self.path / "frames"

    @property
    def heldout(self) -> Path:
        """The held-out frames bag."""
        return self.path / "heldout"

    @property
    def train(self) -> Path:
        """``flowclas-train``'s RUN_DIR."""
        return self.path / "train"

    @property
    def checkpoint(self) -> Path:
        """The trained checkpoint."""
        return self.train / "checkpoint"

    @property
    def train_log(self) -> Path:
        """The training child's stdout and stderr."""
        return self.path / "train.log"

    @property
    def validation(self) -> Path:
        """The validation child's figures."""
        return self.path / "validate.json"

    @property
    def export(self) -> Path:
        """Exports of the new checkpoint for the node's backend."""
        return self.path / "export"

    def record(self, data: dict[str, Any]) -> None:
        """Writes ``run.json`` (atomically)."""
        write_json(self.path / "run.json", data)
