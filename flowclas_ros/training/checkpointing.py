"""Atomic, resumable training state (``RUN_DIR/state/``) and the best model (``RUN_DIR/checkpoint/``).

Training state, one directory per saved step::

    state/step_00000100/model.safetensors   trainable model tensors (no backbone)
    state/step_00000100/optim.pt            optimiser, scheduler, grad-scaler state, torch RNG
                                            (torch.save; read back with weights_only=True)
    state/step_00000100/state.json          step, best metric, numpy / python RNG, extras
    state/latest.json                       {"step": 100, "dir": "step_00000100"}

A step directory is written as ``.step_*.tmp`` and renamed into place (an
atomic rename), then ``latest.json`` is replaced atomically (temp file +
``os.replace``). A process killed at any moment leaves the previous complete
state usable, so a ``kill -9`` loses at most one checkpoint interval. Nothing
here unpickles: tensors come from safetensors, the rest from JSON or
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowclas_ros.model.checkpoint import save_checkpoint
from flowclas_ros.model.checkpoint import trainable_state as model_trainable_state
from flowclas_ros.model.method import AnomalyMethod

STATE_DIR = "state"
BEST_DIR = "checkpoint"
LATEST_FILE = "latest.json"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.pt"
STATE_FILE = "state.json"
KEEP_STATES = 2


class StateError(RuntimeError):
    """A saved training state cannot be read; the message names the file."""


@dataclass
class ResumeState:
    """What :func:`load_training_state` restored besides the modules.

    Attributes:
        step: Optimiser steps completed.
        path: The state directory read.
        extra: The JSON extras saved with it (best metrics, ...).
    """

    step: int
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)


def trainable_state(
    model: AnomalyMethod, extra_modules: dict[str, torch.nn.Module] | None = None
) -> dict[str, torch.Tensor]:
    """The model's stored tensors plus ``extra_modules`` (training-only) under ``<name>.`` prefixes.

    The model part is :func:`flowclas_ros.model.checkpoint.trainable_state` (no backbone, no VL4AD
    text scorer); extra modules are e.g. the segmentation head.
    """
    state = model_trainable_state(model)
    for name, module in (extra_modules or {}).items():
        state.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    return state


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes JSON to ``path`` via a temp file and ``os.replace`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _fsync_file(tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def _set_rng_state(saved: dict[str, Any]) -> None:
    name, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = saved["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_training_state(
    run_dir: Path,
    step: int,
    model: AnomalyMethod,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
    extra: dict[str, Any] | None = None,
    extra_modules: dict[str, torch.nn.Module] | None = None,
) -> Path:
    """Atomically writes the resumable state after ``step`` optimiser steps.

    Args:
        run_dir: The run directory (``state/`` is created inside).
        step: Completed optimiser steps.
        model: The model (its trainable tensors are saved).
        optimizer: Optimiser.
        scheduler: Learning-rate scheduler.
        scaler: fp16 gradient scaler, if used.
        extra: JSON-serialisable extras (best metric, epoch, ...).
        extra_modules: Training-only modules saved with the model tensors.

    Returns:
        The new state directory.
    """
    root = Path(run_dir) / STATE_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp, final = root / f".{name}.tmp", root / name
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model, extra_modules), str(tmp / MODEL_FILE))
    torch_state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(torch_state, tmp / OPTIM_FILE)
    meta = {"step": int(step), "rng": _rng_state(), "extra": extra or {}}
    (tmp / STATE_FILE).write_text(json.dumps(meta) + "\n")
    for file in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
        _fsync_file(tmp / file)
    if final.exists():  # same step saved again (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json_atomic(root / LATEST_FILE, {"step": int(step), "dir": name})
    for old in sorted(root.glob("step_*"))[:-KEEP_STATES]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_latest_state(run_dir: Path) -> Path | None:
    """The newest complete state directory in ``run_dir/state``, or None when there is none."""
    root = Path(run_dir) / STATE_DIR
    if not root.is_dir():
        return None
    latest = root / LATEST_FILE
    if latest.is_file():
        try:
            candidate = root / str(json.loads(latest.read_text())["dir"])
            if (candidate / STATE_FILE).is_file():
                return candidate
        except (OSError, ValueError, KeyError, TypeError):
            pass  # fall back to scanning: the pointer is only a shortcut
    complete = [p for p in sorted(root.glob("step_*")) if (p / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def load_training_state(
    path: Path,
    model: AnomalyMethod,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None = None,
    restore_rng: bool = True,
    extra_modules: dict[str, torch.nn.Module] | None = None,
) -> ResumeState:
    """Restores a state directory written by :func:`save_training_state` into the given objects.

    Raises:
        StateError: Missing or corrupt files, or tensors that do not match the model.
    """
    path = Path(path)
    try:
        meta = json.loads((path / STATE_FILE).read_text())
        step = int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateError(f"{path / STATE_FILE}: unreadable training state ({exc})") from exc
    try:
        tensors = load_file(str(path / MODEL_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise StateError(f"{path / MODEL_FILE}: corrupt or missing ({exc})") from exc
    # States written before the one trainable-key rule also held the frozen CLIP tensors: ignore them.
    tensors = {k: v for k, v in tensors.items() if model.is_stored_key(k)}
    expected = trainable_state(model, extra_modules)
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad_shape = [k for k in tensors if k in expected and tensors[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise StateError(
            f"{path / MODEL_FILE}: does not match the configured model "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {bad_shape[:3]}); "
            "was the run started with a different model config?"
        )
    for name, module in (extra_modules or {}).items():
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    model.load_state_dict(tensors, strict=False)  # backbone keys are not saved
    try:
        saved = torch.load(path / OPTIM_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad / foreign files
        raise StateError(f"{path / OPTIM_FILE}: unreadable ({exc.__class__.__name__}: {exc})") from exc
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    if restore_rng:
        torch.set_rng_state(saved["torch_rng"])
        if torch.cuda.is_available() and saved.get("cuda_rng"):
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        _set_rng_state(meta["rng"])
    return ResumeState(step=step, path=path, extra=dict(meta.get("extra", {})))


def recover_best(run_dir: Path, name: str = BEST_DIR) -> None:
    """Finishes an interrupted swap of the best checkpoint ``name`` (see :func:`save_best`)."""
    run_dir = Path(run_dir)
    best, old = run_dir / name, run_dir / f".{name}.old"
    if not best.exists() and old.exists():
        os.replace(old, best)
    elif best.exists() and old.exists():
        shutil.rmtree(old)


def save_best(
    run_dir: Path,
    model: AnomalyMethod,
    threshold: float | None,
    provenance: dict[str, Any],
    name: str = BEST_DIR,
    image_threshold: float | None = None,
) -> Path:
    """Writes ``RUN_DIR/<name>/`` (docs/ARCHITECTURE.md format) via a temp directory and renames.

    Returns:
        The checkpoint directory.
    """
    run_dir = Path(run_dir)
    best, tmp, old = run_dir / name, run_dir / f".{name}.tmp", run_dir / f".{name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_checkpoint(model, tmp, threshold=threshold, provenance=provenance, image_threshold=image_threshold)
    if old.exists():
        shutil.rmtree(old)
    if best.exists():
        os.replace(best, old)
    os.replace(tmp, best)  # between the two renames recover_best() restores the old one
    shutil.rmtree(old, ignore_errors=True)
    return best
