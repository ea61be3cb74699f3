"""How the FlowCLAS authors' Lightning checkpoint maps onto our model, key by key.

Every key of their ``state_dict`` matches exactly one rule below: mapped to
our parameter name, or deliberately dropped with the reason. A key that
matches no rule, a key our model needs that nothing provides, or a tensor of
the wrong shape is an :class:`ImportError_`. Their top-level Lightning keys are
listed the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from flowclas_ros.model.config import BackboneConfig, FlowConfig, ModelConfig, PreprocessConfig, ScoreConfig


class OfficialImportError(ValueError):
    """The official files do not fit the authors' FlowCLAS layout; the message names the keys."""


MAPPED: tuple[tuple[str, str], ...] = (
    (r"model\.norms\.0\.(weight|bias)", r"norm.\1"),
    (r"model\.flow_blocks\.0\.module_list\.(\d+)\.(.+)", r"flow.module_list.\1.\2"),
    (r"model\.base_dists\.0\.(mu|log_scale|log_normalizer)", r"base.\1"),
    (r"model\.proj_heads\.0\.(weight|bias)", r"proj_head.\1"),
)
"""(their key regex, our key template): the LayerNorm before the flow, the flow, the base
distribution, the contrastive projection head."""

DROPPED: tuple[tuple[str, str], ...] = (
    (r"model\.seg_heads\.0\..+", "segmentation head (Cityscapes training loss only; not in the anomaly map)"),
    (r"prev_loss", "last training loss (Lightning module buffer)"),
    (r"image_threshold\.value", "imported as config.json image_threshold"),
    (r"pixel_threshold\.value", "imported as config.json threshold"),
)
"""(their key regex, why it is not a model tensor)."""

TOP_LEVEL: dict[str, str] = {
    "state_dict": "mapped above",
    "epoch": "recorded in provenance",
    "global_step": "recorded in provenance",
    "pytorch-lightning_version": "recorded in provenance",
    "hyper_parameters": "recorded in provenance (JSON scalars only)",
    "hparams_name": "dropped: Lightning bookkeeping",
    "loops": "dropped: training loop state",
    "callbacks": "dropped: callback state",
    "optimizer_states": "dropped: optimizer state",
    "lr_schedulers": "dropped: scheduler state",
    "transform": "dropped: pickled albumentations object (read as an inert placeholder, never run)",
}
"""Their top-level Lightning keys and what happens to each."""

PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[int, int]]] = {
    "city": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (512, 1024)),
    "allo": ((0.2083, 0.2124, 0.2146), (0.2669, 0.2700, 0.2711), (540, 960)),
}
"""Preset -> (mean, std, default export input size = their training crop)."""

BACKBONES = {768: "rein_dinov2_vitb14", 1024: "rein_dinov2_vitl14"}
_REQUIRED = {
    "norm.weight": "model.norms.0.weight",
    "proj_head.weight": "model.proj_heads.0.weight",
    "flow.module_list.0.log_scale": "model.flow_blocks.0.module_list.0.log_scale",
}
"""Keys read to size the model (ours -> theirs); everything else is checked against the built model."""


@dataclass
class MappedState:
    """Our tensors plus what the checkpoint says about the model's shape and thresholds."""

    tensors: dict[str, torch.Tensor]
    channels: int
    steps: int
    proj_dim: int
    image_threshold: float | None
    pixel_threshold: float | None
    dropped: list[str]


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def check_top_level(checkpoint: object, source: str) -> dict:
    """Returns the checkpoint dict; raises when it is no dict, lacks ``state_dict`` or has unknown keys."""
    if not isinstance(checkpoint, dict):
        raise OfficialImportError(
            f"{source}: expected a Lightning checkpoint dict, got {type(checkpoint).__name__}"
        )
    unknown = sorted(str(k) for k in checkpoint if k not in TOP_LEVEL)
    if unknown:
        raise OfficialImportError(f"{source}: unknown top-level key(s) {_listed(unknown)}")
    if not isinstance(checkpoint.get("state_dict"), dict):
        raise OfficialImportError(f"{source}: no 'state_dict' dict (not a FlowCLAS Lightning checkpoint?)")
    return checkpoint


def map_state(state: dict, source: str) -> MappedState:
    """Applies :data:`MAPPED` / :data:`DROPPED` to their ``state_dict``.

    Raises:
        OfficialImportError: A key matching no rule, a value that is not a
            tensor, or a checkpoint without the flow / LayerNorm / head keys.
    """
    tensors: dict[str, torch.Tensor] = {}
    unknown, not_tensor, dropped = [], [], []
    for key, value in state.items():
        key = str(key)
        if not isinstance(value, torch.Tensor):
            not_tensor.append(key)
            continue
        target = next((re.sub(f"^{rx}$", to, key) for rx, to in MAPPED if re.fullmatch(rx, key)), None)
        if target is not None:
            tensors[target] = value.detach().clone().contiguous()
        elif any(re.fullmatch(rx, key) for rx, _ in DROPPED):
            dropped.append(key)
        else:
            unknown.append(key)
    if unknown or not_tensor:
        parts = [f"unexpected key(s) {_listed(sorted(unknown))}"] if unknown else []
        parts += [f"non-tensor value(s) {_listed(sorted(not_tensor))}"] if not_tensor else []
        raise OfficialImportError(f"{source}: state_dict: {'; '.join(parts)}")
    for needed, theirs in _REQUIRED.items():
        if needed not in tensors:
            raise OfficialImportError(f"{source}: state_dict: missing key {theirs}")
    steps = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("flow.module_list.")) // 3

    def scalar(key: str) -> float | None:
        return float(state[key].reshape(-1)[0]) if key in state and state[key].numel() == 1 else None

    return MappedState(
        tensors=tensors,
        channels=int(tensors["norm.weight"].shape[0]),
        steps=steps,
        proj_dim=int(tensors["proj_head.weight"].shape[0]),
        image_threshold=scalar("image_threshold.value"),
        pixel_threshold=scalar("pixel_threshold.value"),
        dropped=sorted(dropped),
    )


def check_against(mapped: MappedState, expected: dict[str, torch.Tensor], source: str) -> None:
    """Raises unless ``mapped.tensors`` has exactly ``expected``'s keys and shapes (our names)."""
    missing = sorted(set(expected) - set(mapped.tensors))
    extra = sorted(set(mapped.tensors) - set(expected))
    wrong = sorted(
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in mapped.tensors.items()
        if k in expected and v.shape != expected[k].shape
    )
    problems = [f"missing {_listed(missing)}"] if missing else []
    problems += [f"unexpected {_listed(extra)}"] if extra else []
    problems += [f"wrong shape {_listed(wrong)}"] if wrong else []
    if problems:
        raise OfficialImportError(f"{source}: state_dict (in our names): {'; '.join(problems)}")


def model_config(preset: str, mapped: MappedState, dinov2: BackboneConfig) -> ModelConfig:
    """Our config for their model: Rein backbone, official flow, native resolution, symmetric padding."""
    if mapped.channels not in BACKBONES:
        raise OfficialImportError(
            f"model.norms.0.weight: {mapped.channels} channels is neither ViT-B (768) nor ViT-L"
        )
    mean, std, size = PRESETS[preset]
    dinov2.name = BACKBONES[mapped.channels]
    return ModelConfig(
        backbone=dinov2,
        flow=FlowConfig(
            variant="official",
            input_norm="layernorm",
            steps=mapped.steps,
            clamp=2.0,
            proj_dim=mapped.proj_dim,
        ),
        score=ScoreConfig(kind="likelihood", blur_sigma=0.0, image_score="max"),
        preprocess=PreprocessConfig(input_size=size, mean=mean, std=std, resize=False, padding="symmetric"),
    )
