"""The one reader of checkpoint identity and metadata; importable without torch.

A checkpoint directory holds ``config.json`` (this module parses and checks
it: version, model config, ``threshold``, the optional image-level
``image_threshold``, provenance, embedded backbone), ``flow.safetensors``
(the trainable tensors: every key not under the method's frozen prefixes,
:data:`FROZEN_PREFIXES` by default) and
optionally ``backbone.safetensors``. Its identity is the sha256 of the
``config.json`` bytes followed by the ``flow.safetensors`` bytes.

What an exported model carries about its checkpoint is read in :mod:`flowclas_ros.model.export_meta`.

``model.checkpoint`` (torch), ``export``, ``runtime`` and ``evaluation`` all go through here.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowclas_ros.config_io import ConfigError, from_dict, to_dict
from flowclas_ros.model.config import CONFIG_VERSION, DEFAULT_METHOD, ModelConfig

CONFIG_FILE = "config.json"
FLOW_FILE = "flow.safetensors"
BACKBONE_FILE = "backbone.safetensors"
TOP_KEYS = ("version", "model", "threshold", "image_threshold", "provenance", "embedded_backbone")
FROZEN_PREFIXES = ("backbone.", "text_scorer.")
"""State-dict prefixes of the frozen parts every method shares (``AnomalyMethod.frozen_prefixes``):
referenced by config, never copied into a checkpoint or state."""


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


def checkpoint_sha256(config_bytes: bytes, flow_bytes: bytes) -> str:
    """The checkpoint hash: sha256 of ``config.json`` bytes then ``flow.safetensors`` bytes."""
    return hashlib.sha256(config_bytes + flow_bytes).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CheckpointMeta:
    """A parsed, validated ``config.json``.

    Attributes:
        config: The model config.
        threshold: Calibrated pixel-score threshold, or None.
        image_threshold: Calibrated image-level threshold, or None (older checkpoints).
        provenance: Free-form provenance (backbone, data, metrics, ...).
        embedded_backbone: File name of the embedded backbone weights, or None.
    """

    config: ModelConfig
    threshold: float | None = None
    image_threshold: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    embedded_backbone: str | None = None


def _number(meta: dict[str, Any], key: str, source: str) -> float | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CheckpointError(f"{source}: {key} must be a number or null, got {value!r}")  # also inf / nan
    return float(value)


def parse_config_text(text: str, source: str) -> CheckpointMeta:
    """Parses and validates ``config.json`` text (strict: unknown keys and bad values are errors).

    Raises:
        CheckpointError: One line naming ``source`` and what is wrong.
    """
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: top level must be a JSON object")
    unknown = sorted(set(meta) - set(TOP_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: unknown key(s) {', '.join(unknown)}")
    if meta.get("version") != CONFIG_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint version {meta.get('version')!r} is not supported "
            f"(this flowclas_ros reads version {CONFIG_VERSION})"
        )
    try:
        config = from_dict(ModelConfig, meta.get("model", {}), prefix="model.")
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    provenance = meta.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise CheckpointError(f"{source}: provenance must be an object")
    embedded = meta.get("embedded_backbone")
    # A path here could make the loader read any file on the machine (``../../x`` or ``/x``).
    if embedded is not None and (
        not isinstance(embedded, str)
        or not embedded
        or Path(embedded).name != embedded
        or embedded in (".", "..")
        or "\\" in embedded
    ):
        raise CheckpointError(
            f"{source}: embedded_backbone must be a file name inside the checkpoint directory "
            f"(no directories, '..' or absolute paths), got {embedded!r}"
        )
    return CheckpointMeta(
        config,
        _number(meta, "threshold", source),
        _number(meta, "image_threshold", source),
        provenance,
        embedded,
    )


def config_json_text(meta: CheckpointMeta, source: str = CONFIG_FILE) -> str:
    """The ``config.json`` text for ``meta`` (key order kept: the prompt class order matters).

    ``image_threshold`` is written only when set and ``model.method`` only when it is not the
    default (``flowclas``), so older readers keep reading new files and a FlowCLAS checkpoint's
    bytes (its hash) do not change with the key's arrival.

    Raises:
        CheckpointError: Provenance is not JSON-serialisable.
    """
    model = to_dict(meta.config)
    if model.get("method") == DEFAULT_METHOD:
        del model["method"]
    data: dict[str, Any] = {
        "version": CONFIG_VERSION,
        "model": model,
        "threshold": None if meta.threshold is None else float(meta.threshold),
        "provenance": meta.provenance or {},
        "embedded_backbone": meta.embedded_backbone,
    }
    if meta.image_threshold is not None:
        data["image_threshold"] = float(meta.image_threshold)
    try:
        return json.dumps(data, indent=2) + "\n"
    except TypeError as exc:
        raise CheckpointError(f"{source}: provenance is not JSON-serialisable ({exc})") from exc


@dataclass(frozen=True)
class CheckpointIdentity:
    """A checkpoint's config and hash, read without building the model.

    Attributes:
        path: Checkpoint directory (or the exported file the identity came from).
        config_text: ``config.json`` exactly as stored.
        meta: The parsed config.json.
        sha256: :func:`checkpoint_sha256` of the checkpoint.
    """

    path: Path
    config_text: str
    meta: CheckpointMeta
    sha256: str

    @property
    def config(self) -> ModelConfig:
        """The model config."""
        return self.meta.config

    @property
    def threshold(self) -> float | None:
        """The calibrated pixel threshold, or None."""
        return self.meta.threshold

    @property
    def image_threshold(self) -> float | None:
        """The optional image-level threshold (None in older checkpoints)."""
        return self.meta.image_threshold


def read_config_file(config_path: Path) -> tuple[bytes, CheckpointMeta]:
    """Reads and validates a ``config.json`` file; returns its bytes and the parsed metadata.

    Raises:
        CheckpointError: Missing, unreadable or invalid.
    """
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (not a checkpoint directory?)")
    try:
        raw = config_path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: cannot be read as UTF-8 text ({exc})") from exc
    return raw, parse_config_text(text, str(config_path))


def read_checkpoint_identity(path: str | Path) -> CheckpointIdentity:
    """Reads a checkpoint directory's config and hash (cheap: no model is built, no torch).

    Raises:
        CheckpointError: Missing directory / files or an invalid config.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    config_path, flow_path = path / CONFIG_FILE, path / FLOW_FILE
    raw, meta = read_config_file(config_path)
    if not flow_path.is_file():
        raise CheckpointError(f"{flow_path}: missing (not a checkpoint directory?)")
    return CheckpointIdentity(path, raw.decode("utf-8"), meta, checkpoint_sha256(raw, flow_path.read_bytes()))


def with_input_size(config: ModelConfig, input_size: tuple[int, int]) -> ModelConfig:
    """A copy of ``config`` whose ``preprocess.input_size`` is ``input_size``.

    A fixed-size graph always takes that size, so ``preprocess.resize`` is set:
    a native-resolution checkpoint's images are resized to the export size.
    """
    copy = from_dict(ModelConfig, to_dict(config))
    copy.preprocess.resize_to(input_size)
    return copy


def format_size(size: tuple[int, int]) -> str:
    """``(448, 640)`` -> ``448x640`` (height x width)."""
    return f"{size[0]}x{size[1]}"
