"""The swap history in ``learn_dir/history.json``: which models served, and a copy of each one swapped out.

The history is a stack of serving models, the current one on top, plus an append-only event
log. A swap pushes the new model; ``~/rollback_model`` pops back to the one below it. A model
that served before a swap and lies outside ``learn_dir`` (the node's original checkpoint) is
first kept under ``learn_dir/models/<sha12>/`` (hard links where the file system allows, else a
copy), so a rollback works even if the original is moved or rewritten.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.learning.layout import read_json, write_json

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class ServedModel:
    """A model that served: its path and identity (sha256 of the checkpoint it came from)."""

    path: str
    identity: str


def model_identity(path: str | Path) -> str:
    """The identity (sha256) of a checkpoint directory or a ``flowclas-export`` ONNX file.

    Other files (OpenVINO IR, TensorRT engines) are identified by the sha256 of their bytes.

    Raises:
        CheckpointError / ModelMismatchError: Missing or invalid model (one line).
    """
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity, sha256_file
    from flowclas_ros.model.export_meta import read_onnx_metadata

    path = Path(path)
    if path.is_dir():
        return read_checkpoint_identity(path).sha256
    if path.suffix == ".onnx":
        return read_onnx_metadata(path).identity.sha256
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint directory or model file")
    return sha256_file(path)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def keep_copy(model: Path, models_dir: Path, identity: str) -> Path:
    """``models_dir/<sha12>/`` holding ``model`` (a directory's files, or the file), made once.

    Written to a temporary name and renamed, so a crash never leaves a half copy behind.
    """
    target = models_dir / identity[:12]
    kept = target / model.name if model.is_file() else target
    if target.exists():
        return kept
    tmp = models_dir / f".{identity[:12]}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = [model] if model.is_file() else sorted(p for p in model.iterdir() if p.is_file())
        for file in files:
            _link_or_copy(file, tmp / file.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return kept


class SwapHistory:
    """``learn_dir/history.json``: the serving-model stack and the swap events.

    Args:
        learn_dir: The learn directory (created on the first write).
    """

    def __init__(self, learn_dir: Path):
        self.learn_dir = Path(learn_dir)
        self.path = self.learn_dir / HISTORY_FILE

    def _read(self) -> dict[str, Any]:
        data = read_json(self.path)
        data.setdefault("stack", [])
        data.setdefault("events", [])
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.learn_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.path, data)

    def stack(self) -> list[ServedModel]:
        """Serving models, oldest first (the last one serves now)."""
        return [ServedModel(**entry) for entry in self._read()["stack"]]

    def events(self) -> list[dict[str, Any]]:
        """Every recorded event, oldest first."""
        return list(self._read()["events"])

    def start(self, serving: ServedModel) -> None:
        """Records the model the node configured with; the stack restarts unless it already serves on top."""
        data = self._read()
        if not data["stack"] or data["stack"][-1]["identity"] != serving.identity:
            data["stack"] = [asdict(serving)]
            data["events"].append({"time": time.time(), "event": "configure", **asdict(serving)})
            self._write(data)

    def push(self, new: ServedModel, previous: ServedModel, reason: str) -> None:
        """Records a swap from ``previous`` to ``new``, keeping ``previous`` on disk inside learn_dir."""
        data = self._read()
        kept = Path(previous.path)
        if self.learn_dir.resolve() not in kept.resolve().parents:
            kept = keep_copy(kept, self.learn_dir / "models", previous.identity)
        if data["stack"] and data["stack"][-1]["identity"] == previous.identity:
            data["stack"][-1] = asdict(ServedModel(str(kept), previous.identity))
        else:
            data["stack"].append(asdict(ServedModel(str(kept), previous.identity)))
        data["stack"].append(asdict(new))
        data["events"].append(
            {
                "time": time.time(),
                "event": "swap",
                "reason": reason,
                "from": asdict(previous),
                "to": asdict(new),
            }
        )
        self._write(data)

    def rollback_target(self) -> ServedModel | None:
        """The model below the serving one, or None when nothing was swapped in."""
        stack = self.stack()
        return stack[-2] if len(stack) >= 2 else None

    def pop(self) -> None:
        """Records a rollback: the serving model leaves the stack (its files stay on disk)."""
        data = self._read()
        if len(data["stack"]) < 2:
            return
        gone = data["stack"].pop()
        data["events"].append(
            {"time": time.time(), "event": "rollback", "from": gone, "to": data["stack"][-1]}
        )
        self._write(data)
