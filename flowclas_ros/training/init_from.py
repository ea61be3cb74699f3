"""``flowclas-train --init-from CKPT``: fine-tune a trained checkpoint on new data.

The run starts from the checkpoint's flow and projection-head weights and its model config;
``--set model.KEY=VALUE`` may still change what does not touch the trained tensors (for
example ``model.score.blur_sigma``). The config file's ``model:`` section is not used, but it
is checked: a checkpoint whose backbone or input size differs from what the file (or a
``--set``) asks for is a one-line error, since the flow was trained on that backbone's
features at that size. Thresholds are recalibrated on the new validation data as in any run.
The new checkpoint's provenance names its parent (path and identity hash).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.config_io import ConfigError, apply_overrides, from_dict, read_mapping, to_dict
from flowclas_ros.model.checkpoint_meta import CheckpointError, read_checkpoint_identity
from flowclas_ros.model.config import ModelConfig
from flowclas_ros.training.config import TrainConfig

log = logging.getLogger(__name__)

# Keys that fix what the trained flow expects; the weights file paths may differ between
# machines (the hash is compared instead).
_ARCH_SKIP = ("backbone.weights_file", "backbone.rein_file")


@dataclass(frozen=True)
class Parent:
    """The checkpoint a fine-tuning run starts from.

    Attributes:
        path: Its directory.
        sha256: Its identity (``model/checkpoint_meta.py``: sha256 of ``config.json`` then
            ``flow.safetensors``).
        config: Its model config.
        provenance: Its own provenance (its sources, step, metrics).
    """

    path: Path
    sha256: str
    config: ModelConfig
    provenance: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The ``parent`` entry of the new checkpoint's provenance."""
        prov = self.provenance
        return {
            "path": str(self.path.resolve()),
            "sha256": self.sha256,
            "step": prov.get("step"),
            "val_metrics": prov.get("val_metrics"),
            "training_data": (prov.get("training_data") or {}).get("sources")
            or (prov.get("training_data") or {}).get("train"),
        }


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def _is_arch(key: str) -> bool:
    return (key.startswith("backbone.") and key not in _ARCH_SKIP) or key == "preprocess.input_size"


def read_parent(path: str | Path) -> Parent:
    """Reads the ``--init-from`` checkpoint's identity and config (no model is built).

    Raises:
        ConfigError: Not a readable checkpoint, or one whose backbone is embedded.
    """
    try:
        identity = read_checkpoint_identity(path)
    except CheckpointError as exc:
        raise ConfigError(f"--init-from: {exc}") from exc
    if identity.meta.embedded_backbone:
        raise ConfigError(
            f"--init-from {path}: its backbone is embedded ({identity.meta.embedded_backbone}); fine-tuning "
            "needs a checkpoint that references its backbone by name or file"
        )
    cfg = identity.config
    weights = Path(cfg.backbone.weights_file)
    if cfg.backbone.weights == "file" and not weights.is_absolute() and (Path(path) / weights).is_file():
        cfg.backbone.weights_file = str(Path(path) / weights)  # as load_checkpoint resolves it
    return Parent(Path(path), identity.sha256, cfg, identity.meta.provenance or {})


def load_config(
    config_path: str | Path, overrides: list[str], init_from: str | Path
) -> tuple[TrainConfig, Parent]:
    """The run's config: the file and ``--set`` for everything but ``model``, which comes from the checkpoint.

    Raises:
        ConfigError: Bad config or checkpoint, or a backbone / input size that differs from
            the checkpoint's (the message names both).
    """
    parent = read_parent(init_from)
    raw = read_mapping(config_path)
    ckpt_flat = _flat(to_dict(parent.config))
    file_model = raw.get("model") or {}
    set_model = [o for o in overrides if o.strip().startswith("model.")]
    asked_raw = apply_overrides({"model": file_model}, set_model)["model"]  # what the config asks for
    try:
        asked = from_dict(ModelConfig, asked_raw, prefix="model.")
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    asked_flat = _flat(to_dict(asked))
    given = [k for k in _flat(asked_raw) if k in asked_flat]
    clash = [k for k in given if _is_arch(k) and asked_flat[k] != ckpt_flat.get(k)]
    if clash:
        where = (
            "--set" if any(o.strip().startswith(f"model.{clash[0]}=") for o in set_model) else "the config"
        )
        diffs = "; ".join(f"model.{k}: checkpoint {ckpt_flat.get(k)}, {where} {asked_flat[k]}" for k in clash)
        raise ConfigError(
            f"--init-from {init_from}: its backbone or input size differs from {where}'s ({diffs}); "
            "fine-tuning keeps the checkpoint's: make the config's model section match it (or --set "
            "model.KEY=VALUE), or train from scratch"
        )
    file_given = [k for k in _flat(file_model) if k in asked_flat]
    ignored = [k for k in file_given if not _is_arch(k) and asked_flat[k] != ckpt_flat.get(k)]
    ignored = [k for k in ignored if not any(o.strip().startswith(f"model.{k}=") for o in set_model)]
    if ignored:
        log.warning(
            "--init-from: the checkpoint's model config is used; the config file's %s ignored "
            "(change them with --set model.KEY=VALUE)",
            ", ".join(f"model.{k}" for k in ignored[:4]) + (" ..." if len(ignored) > 4 else ""),
        )
    data = dict(raw, model=to_dict(parent.config))
    try:
        cfg = from_dict(TrainConfig, apply_overrides(data, overrides))
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    return cfg, parent
