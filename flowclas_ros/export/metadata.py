"""What an exported model remembers about its checkpoint, and the check that refuses a mismatched pair.

An ONNX export carries, in ``metadata_props``, the checkpoint's ``config.json``
text, the checkpoint hash (:attr:`LoadedCheckpoint.sha256`) and the input size
it was exported for. A runtime given both a checkpoint and an exported file
compares them; a runtime given only the exported file rebuilds the model
config and threshold from the metadata.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowclas_ros.config_io import ConfigError, from_dict, to_dict
from flowclas_ros.model.checkpoint import CONFIG_FILE, FLOW_FILE, CheckpointError
from flowclas_ros.model.config import CONFIG_VERSION, ModelConfig

METADATA_FORMAT = "1"
KEY_FORMAT = "flowclas.format"
KEY_CONFIG = "flowclas.checkpoint_config"
KEY_SHA256 = "flowclas.checkpoint_sha256"
KEY_INPUT_SIZE = "flowclas.input_size"
KEY_DYNAMIC_BATCH = "flowclas.dynamic_batch"
KEY_VERIFY = "flowclas.verification"
KEY_EXPORTER = "flowclas.exporter"

INPUT_NAME = "input"
OUTPUT_NAME = "score_map"


class ModelMismatchError(ValueError):
    """An exported model does not belong to the given checkpoint / input size, or has no metadata."""


@dataclass(frozen=True)
class CheckpointIdentity:
    """A checkpoint's config and hash, read without building the model.

    Attributes:
        path: Checkpoint directory (or the exported file the identity came from).
        config_text: ``config.json`` exactly as stored.
        config: The parsed model config.
        threshold: Calibrated threshold, or None.
        sha256: Same value as :attr:`LoadedCheckpoint.sha256`.
    """

    path: Path
    config_text: str
    config: ModelConfig
    threshold: float | None
    sha256: str

    @property
    def image_threshold(self) -> float | None:
        """``config.json``'s optional image-level threshold (None in older checkpoints)."""
        value = json.loads(self.config_text).get("image_threshold")
        return None if value is None else float(value)


def checkpoint_sha256(config_bytes: bytes, flow_bytes: bytes) -> str:
    """The checkpoint hash: sha256 of ``config.json`` bytes then ``flow.safetensors`` bytes."""
    return hashlib.sha256(config_bytes + flow_bytes).hexdigest()


def parse_checkpoint_config(text: str, source: str) -> tuple[ModelConfig, float | None]:
    """Parses ``config.json`` text into (model config, threshold).

    Raises:
        CheckpointError: Not JSON, wrong version, or an invalid model config; names ``source``.
    """
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: checkpoint config is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("version") != CONFIG_VERSION:
        found = meta.get("version") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{source}: checkpoint config version {found!r} is not supported (expected {CONFIG_VERSION})"
        )
    try:
        config = from_dict(ModelConfig, meta.get("model", {}), prefix="model.")
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    threshold = meta.get("threshold")
    return config, None if threshold is None else float(threshold)


def read_checkpoint_identity(path: str | Path) -> CheckpointIdentity:
    """Reads a checkpoint directory's config and hash (cheap: no backbone is built).

    Raises:
        CheckpointError: Missing directory / files or an invalid config.
    """
    path = Path(path)
    config_path, flow_path = path / CONFIG_FILE, path / FLOW_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    for file in (config_path, flow_path):
        if not file.is_file():
            raise CheckpointError(f"{file}: missing (not a checkpoint directory?)")
    config_bytes = config_path.read_bytes()
    text = config_bytes.decode("utf-8", errors="replace")
    config, threshold = parse_checkpoint_config(text, str(config_path))
    return CheckpointIdentity(
        path, text, config, threshold, checkpoint_sha256(config_bytes, flow_path.read_bytes())
    )


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
) -> dict[str, str]:
    """The ``metadata_props`` an export stores (all values are strings)."""
    return {
        KEY_FORMAT: METADATA_FORMAT,
        KEY_CONFIG: identity.config_text,
        KEY_SHA256: identity.sha256,
        KEY_INPUT_SIZE: f"{int(input_size[0])},{int(input_size[1])}",
        KEY_DYNAMIC_BATCH: "true" if dynamic_batch else "false",
        KEY_VERIFY: json.dumps(verification, sort_keys=True),
        KEY_EXPORTER: json.dumps(exporter, sort_keys=True),
    }


@dataclass(frozen=True)
class ExportMetadata:
    """Parsed export metadata.

    Attributes:
        source: The file it was read from.
        identity: The checkpoint the export came from (``config`` has the export's input size).
        input_size: (height, width) the graph takes.
        dynamic_batch: Whether the batch axis is dynamic.
        verification: The export-time ORT-vs-torch check (max_abs_diff, score_range, ...).
    """

    source: Path
    identity: CheckpointIdentity
    input_size: tuple[int, int]
    dynamic_batch: bool
    verification: dict[str, Any]


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
    except ValueError as exc:
        raise ModelMismatchError(f"{source}: corrupt export metadata ({exc})") from exc
    try:
        config, threshold = parse_checkpoint_config(props[KEY_CONFIG], f"{source} (embedded config)")
    except CheckpointError as exc:
        raise ModelMismatchError(str(exc)) from exc
    identity = CheckpointIdentity(
        source, props[KEY_CONFIG], with_input_size(config, (height, width)), threshold, props[KEY_SHA256]
    )
    return ExportMetadata(
        source, identity, (height, width), props.get(KEY_DYNAMIC_BATCH) == "true", verification
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
    import onnx

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
