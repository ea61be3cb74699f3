"""The one reader of weight files (state dicts): ``.safetensors``, or ``torch.save`` files without code.

Every weights file the package loads by name comes through :func:`read_state_dict`: backbone
files (timm / DINOv2), CLIP weights of the text scorer, SAM2 checkpoints. ``.pth`` / ``.pt``
files are read with ``torch.load(weights_only=True)``, which refuses pickled code. (The FlowCLAS
authors' Lightning files hold pickled objects that ``weights_only`` refuses; they go through
:func:`flowclas_ros.model.safe_load.safe_torch_load` in ``flowclas-import``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


class WeightsFileError(ValueError):
    """A weights file is missing, unreadable or not a state dict of tensors.

    ``str(err)`` is ``"<path>: <reason>"``; callers that add their own context use ``err.reason``.
    """

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read_state_dict(
    path: str | Path,
    wrappers: Sequence[str] = ("model", "state_dict"),
    *,
    require_wrapper: bool = False,
    what: str = "weights",
) -> dict[str, torch.Tensor]:
    """Reads a state dict of tensors.

    Args:
        path: A ``.safetensors`` file or a ``torch.save``'d dict (``.pth``, ``.pt``, ...).
        wrappers: Keys whose dict value replaces the dict that holds it, in order
            (``{"model": {...}}``, Lightning's ``{"state_dict": {...}}``).
        require_wrapper: The file must hold ``wrappers[0]`` (e.g. SAM2's ``{"model": ...}``).
        what: What the file holds, for the messages (e.g. ``CLIP weights``).

    Raises:
        WeightsFileError: Missing or unreadable file (one line, naming it), or not a state dict of
            tensors (pickled code is refused, never run).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(path, f"{what} file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - readers raise many unrelated types; one message for all
        reason = " ".join(str(exc).split())[:200]
        raise WeightsFileError(path, f"cannot read {what} ({type(exc).__name__}: {reason})") from exc
    if require_wrapper and not (isinstance(data, dict) and isinstance(data.get(wrappers[0]), dict)):
        raise WeightsFileError(path, f"expected a dict with a {wrappers[0]!r} state dict")
    for key in wrappers:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsFileError(path, "expected a state dict of tensors")
    return data
