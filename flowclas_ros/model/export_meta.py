"""The metadata an exported model carries about its checkpoint; importable without torch.

An exported model (ONNX ``metadata_props``, or an engine sidecar's copy) carries the
checkpoint's ``config.json`` text, its identity hash, the graph's input size and how the
export was verified (:func:`build_metadata`); :func:`parse_metadata` rebuilds the config and
thresholds from them, and :func:`check_matches` refuses an export that belongs to another
checkpoint or input size. The checkpoint side is :mod:`flowclas_ros.model.checkpoint_meta`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowclas_ros.model.checkpoint_meta import (
    CheckpointError,
    CheckpointIdentity,
    format_size,
    parse_config_text,
    with_input_size,
)

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


class ModelMismatchError(ValueError):
    """An exported model does not belong to the given checkpoint / input size, or has no metadata."""


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
