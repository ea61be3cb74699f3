"""The one reader of checkpoint identity and metadata; importable without torch.

A checkpoint directory holds ``config.json`` (this module parses and checks
it: version, model config, ``threshold``, the optional image-level
``image_threshold``, provenance, embedded backbone), ``flow.safetensors``
(the trainable tensors: every key not under :data:`FROZEN_PREFIXES`) and
optionally ``backbone.safetensors``. Its identity is the sha256 of the
``config.json`` bytes followed by the ``flow.safetensors`` bytes.

An exported model (ONNX ``metadata_props``, or an engine sidecar's copy) carries
the ``config.json`` text, that hash, its input size and how it was verified;
:func:`parse_metadata` rebuilds the config and thresholds from them, and
:func:`check_matches` refuses an export that belongs to another checkpoint.

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
from flowclas_ros.model.config import CONFIG_VERSION, ModelConfig

CONFIG_FILE = "config.json"
FLOW_FILE = "flow.safetensors"
BACKBONE_FILE = "backbone.safetensors"
TOP_KEYS = ("version", "model", "threshold", "image_threshold", "provenance", "embedded_backbone")
FROZEN_PREFIXES = ("backbone.", "text_scorer.")
"""State-dict prefixes of the frozen parts: referenced by config, never copied into a checkpoint or state."""

METADATA_FORMAT = "1"
KEY_FORMAT = "flowclas.format"
KEY_CONFIG = "flowclas.checkpoint_config"
KEY_SHA256 = "flowclas.checkpoint_sha256"
KEY_INPUT_SIZE = "flowclas.input_size"
KEY_DYNAMIC_BATCH = "flowclas.dynamic_batch"
KEY_VERIFY = "flowclas.verification"
KEY_EXPORTER = "flowclas.exporter"
KEY_PRECISION = "flowclas.precision"
KEY_QUALITY = "flowclas.quality_gate"
INPUT_NAME = "input"
OUTPUT_NAME = "score_map"


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


class ModelMismatchError(ValueError):
    """An exported model does not belong to the given checkpoint / input size, or has no metadata."""


def is_trainable_key(key: str) -> bool:
    """Whether a state-dict key is stored in ``flow.safetensors`` / a training state (the one rule)."""
    return not key.startswith(FROZEN_PREFIXES)


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

    ``image_threshold`` is written only when set, so older readers keep reading new files without it.

    Raises:
        CheckpointError: Provenance is not JSON-serialisable.
    """
    data: dict[str, Any] = {
        "version": CONFIG_VERSION,
        "model": to_dict(meta.config),
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
    copy.preprocess.input_size = (int(input_size[0]), int(input_size[1]))
    copy.preprocess.resize = True
    return copy


def format_size(size: tuple[int, int]) -> str:
    """``(448, 640)`` -> ``448x640`` (height x width)."""
    return f"{size[0]}x{size[1]}"


def build_metadata(
    identity: CheckpointIdentity,
    input_size: tuple[int, int],
    *,
    dynamic_batch: bool,
    verification: dict[str, Any],
    exporter: dict[str, str],
    precision: str = "fp32",
    quality: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` an export stores (all values are strings)."""
    props = {
        KEY_FORMAT: METADATA_FORMAT,
        KEY_CONFIG: identity.config_text,
        KEY_SHA256: identity.sha256,
        KEY_INPUT_SIZE: f"{int(input_size[0])},{int(input_size[1])}",
        KEY_DYNAMIC_BATCH: "true" if dynamic_batch else "false",
        KEY_VERIFY: json.dumps(verification, sort_keys=True),
        KEY_EXPORTER: json.dumps(exporter, sort_keys=True),
        KEY_PRECISION: precision,
    }
    if quality is not None:
        props[KEY_QUALITY] = json.dumps(quality, sort_keys=True)
    return props


@dataclass(frozen=True)
class ExportMetadata:
    """Parsed export metadata.

    Attributes:
        source: The file it was read from.
        identity: The checkpoint the export came from (its config has the export's input size).
        input_size: (height, width) the graph takes.
        dynamic_batch: Whether the batch axis is dynamic.
        verification: The export-time check (max_abs_diff, score_range, ...).
        precision: ``fp32`` (a plain export) or the reduced precision baked in (``int8``).
        quality: The AP gate a reduced-precision export passed, or empty.
    """

    source: Path
    identity: CheckpointIdentity
    input_size: tuple[int, int]
    dynamic_batch: bool
    verification: dict[str, Any]
    precision: str = "fp32"
    quality: dict[str, Any] = field(default_factory=dict)


def parse_metadata(props: dict[str, str], source: str | Path) -> ExportMetadata:
    """Parses export metadata (ONNX ``metadata_props`` or an engine sidecar's copy).

    Raises:
        ModelMismatchError: The file was not written by ``flowclas-export`` or its metadata is broken.
    """
    source = Path(source)
    missing = [k for k in (KEY_FORMAT, KEY_CONFIG, KEY_SHA256, KEY_INPUT_SIZE) if k not in props]
    if missing:
        raise ModelMismatchError(
            f"{source}: not a flowclas-export model (metadata {', '.join(missing)} missing); "
            "export it with `flowclas-export --checkpoint CKPT --format onnx --out FILE`"
        )
    if props[KEY_FORMAT] != METADATA_FORMAT:
        raise ModelMismatchError(
            f"{source}: export metadata format {props[KEY_FORMAT]!r} is not supported (expected "
            f"{METADATA_FORMAT}); re-export it with this flowclas_ros"
        )
    try:
        height, width = (int(v) for v in props[KEY_INPUT_SIZE].split(","))
        verification = json.loads(props.get(KEY_VERIFY, "{}"))
        quality = json.loads(props.get(KEY_QUALITY, "{}"))
    except ValueError as exc:
        raise ModelMismatchError(f"{source}: corrupt export metadata ({exc})") from exc
    try:
        meta = parse_config_text(props[KEY_CONFIG], f"{source} (embedded config)")
    except CheckpointError as exc:
        raise ModelMismatchError(str(exc)) from exc
    meta.config = with_input_size(meta.config, (height, width))
    identity = CheckpointIdentity(source, props[KEY_CONFIG], meta, props[KEY_SHA256])
    return ExportMetadata(
        source,
        identity,
        (height, width),
        props.get(KEY_DYNAMIC_BATCH) == "true",
        verification,
        props.get(KEY_PRECISION, "fp32"),
        quality,
    )


def check_matches(
    meta: ExportMetadata,
    checkpoint: CheckpointIdentity | None,
    input_size: tuple[int, int] | None,
) -> None:
    """Refuses an exported model that does not belong to ``checkpoint`` or to ``input_size``.

    Args:
        meta: The exported file's metadata.
        checkpoint: The checkpoint the caller wants to run, or None (trust the file's own config).
        input_size: The input size the caller expects, or None for the checkpoint config's size
            (no size check when both are None).

    Raises:
        ModelMismatchError: One line naming both files and what differs.
    """
    if checkpoint is not None and checkpoint.sha256 != meta.identity.sha256:
        raise ModelMismatchError(
            f"{meta.source} was exported from a different checkpoint (sha256 {meta.identity.sha256[:12]}…) "
            f"than {checkpoint.path} (sha256 {checkpoint.sha256[:12]}…); re-export it with "
            f"`flowclas-export --checkpoint {checkpoint.path} ...` or pass the matching checkpoint"
        )
    if input_size is None and checkpoint is not None:
        input_size = checkpoint.config.preprocess.input_size
    if input_size is not None and tuple(input_size) != meta.input_size:
        raise ModelMismatchError(
            f"{meta.source} takes {format_size(meta.input_size)} inputs but "
            f"{format_size(tuple(input_size))} was expected (checkpoint preprocess.input_size or the "
            "input_size option); re-export with --input-size or pass the matching input size"
        )


def read_onnx_props(path: str | Path) -> dict[str, str]:
    """The ``flowclas.*`` metadata of an ONNX file (weights stored externally are not loaded).

    Raises:
        ModelMismatchError: Missing or unreadable file.
    """
    import onnx  # protobuf only; no torch

    path = Path(path)
    if not path.is_file():
        raise ModelMismatchError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelMismatchError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {exc})") from exc
    return {prop.key: prop.value for prop in model.metadata_props if prop.key.startswith("flowclas.")}


def read_onnx_metadata(path: str | Path) -> ExportMetadata:
    """Reads and parses the export metadata of an ONNX file.

    Raises:
        ModelMismatchError: Missing file, not ONNX, or not written by ``flowclas-export``.
    """
    return parse_metadata(read_onnx_props(path), path)
