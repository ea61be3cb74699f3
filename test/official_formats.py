"""Random weights written in the FlowCLAS authors' file layouts (test helper, no trained weights).

Layouts, read from their code (TRAILab/FlowCLAS e451e6c, dinov2 fork 1e7a59b, FrEIA 421249652c):

* Meta's ``dinov2_vit{b,l}14_pretrain.pth``: a plain dict with ``cls_token``
  [1,1,C], ``pos_embed`` [1,1370,C], ``mask_token`` [1,C], ``patch_embed.proj``,
  ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,mlp.fc2,ls2.gamma}``, ``norm``.
* The Rein file: ``{"state_dict": {"backbone.reins.<LoRAReins param>": ...}, "meta": ...}``.
* The Lightning checkpoint: top-level Lightning keys, ``state_dict`` with
  ``model.{norms,flow_blocks,base_dists,proj_heads}.0.*`` (and ``seg_heads`` for
  Cityscapes), ``prev_loss``, ``image_threshold.value``, ``pixel_threshold.value``,
  and ``transform``: a pickled object of a class that does not exist here.

Values are random but non-degenerate (LayerScale, Rein scale and the flow's
output convs are far from their identity inits), so a parity check means something.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

ARCHS = {"b": (768, 12, 12), "l": (1024, 24, 16)}
"""Arch letter -> (embed dim, depth, heads)."""


def _randn(gen: torch.Generator, *shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std + mean


def dinov2_state(arch: str = "b", seed: int = 0) -> dict[str, torch.Tensor]:
    """Meta's DINOv2 state dict layout with random values."""
    dim, depth, _ = ARCHS[arch]
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {
        "cls_token": _randn(gen, 1, 1, dim),
        "pos_embed": _randn(gen, 1, 1370, dim, std=0.5),
        "mask_token": torch.zeros(1, dim),
        "patch_embed.proj.weight": _randn(gen, dim, 3, 14, 14, std=0.05),
        "patch_embed.proj.bias": _randn(gen, dim),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        state.update(
            {
                p + "norm1.weight": _randn(gen, dim, std=0.1, mean=1.0),
                p + "norm1.bias": _randn(gen, dim),
                p + "attn.qkv.weight": _randn(gen, 3 * dim, dim, std=0.05),
                p + "attn.qkv.bias": _randn(gen, 3 * dim),
                p + "attn.proj.weight": _randn(gen, dim, dim),
                p + "attn.proj.bias": _randn(gen, dim),
                p + "ls1.gamma": _randn(gen, dim, std=0.1, mean=0.5),
                p + "norm2.weight": _randn(gen, dim, std=0.1, mean=1.0),
                p + "norm2.bias": _randn(gen, dim),
                p + "mlp.fc1.weight": _randn(gen, 4 * dim, dim),
                p + "mlp.fc1.bias": _randn(gen, 4 * dim),
                p + "mlp.fc2.weight": _randn(gen, dim, 4 * dim),
                p + "mlp.fc2.bias": _randn(gen, dim),
                p + "ls2.gamma": _randn(gen, dim, std=0.1, mean=0.5),
            }
        )
    state["norm.weight"] = _randn(gen, dim, std=0.1, mean=1.0)
    state["norm.bias"] = _randn(gen, dim)
    return state


def rein_state(arch: str = "b", seed: int = 1) -> dict[str, torch.Tensor]:
    """``LoRAReins`` parameters (token_length 100, rank = heads, query dims 256), unprefixed."""
    dim, depth, rank = ARCHS[arch]
    gen = torch.Generator().manual_seed(seed)
    return {
        "learnable_tokens_a": _randn(gen, depth, 100, rank, std=0.3),
        "learnable_tokens_b": _randn(gen, depth, rank, dim, std=0.3),
        "scale": torch.tensor(0.5),
        "mlp_token2feat.weight": _randn(gen, dim, dim, std=0.03),
        "mlp_token2feat.bias": _randn(gen, dim),
        "mlp_delta_f.weight": _randn(gen, dim, dim, std=0.03),
        "mlp_delta_f.bias": _randn(gen, dim),
        "transform.weight": _randn(gen, 256, dim),
        "transform.bias": _randn(gen, 256),
        "merge.weight": _randn(gen, 256, 768),
        "merge.bias": _randn(gen, 256),
    }


def flowclas_state(
    dim: int, *, steps: int = 16, proj_dim: int = 128, seg_classes: int = 0, seed: int = 2
) -> dict:
    """The Lightning ``state_dict`` of their FlowCLAS module (``model.*`` plus module buffers)."""
    gen = torch.Generator().manual_seed(seed)
    half = dim // 2
    state: dict[str, torch.Tensor] = OrderedDict(prev_loss=torch.tensor(1.25))
    for k in range(steps):
        a, p, c = (f"model.flow_blocks.0.module_list.{3 * k + j}." for j in range(3))
        perm = torch.randperm(dim, generator=gen)
        state[a + "is_initialized"] = torch.tensor(True)
        state[a + "log_scale"] = _randn(gen, 1, dim, 1, 1, std=0.2)
        state[a + "loc"] = _randn(gen, 1, dim, 1, 1, std=0.2)
        state[p + "perm"] = perm
        state[p + "perm_inv"] = torch.argsort(perm)
        for n, (c_in, c_out, kernel) in enumerate(
            ((half, half, 3), (half, half, 1), (half, half, 3)), start=1
        ):
            state[c + f"subnet.gn{n}.weight"] = _randn(gen, c_in, std=0.1, mean=1.0)
            state[c + f"subnet.gn{n}.bias"] = _randn(gen, c_in, std=0.1)
            state[c + f"subnet.conv{n}.weight"] = _randn(gen, c_out, c_in, kernel, kernel, std=0.02)
        state[c + "subnet.conv_out.weight"] = _randn(gen, 2 * (dim - half), half, 1, 1, std=0.001)
    state["model.norms.0.weight"] = _randn(gen, dim, std=0.1, mean=1.0)
    state["model.norms.0.bias"] = _randn(gen, dim, std=0.1)
    state["model.base_dists.0.mu"] = _randn(gen, dim, std=0.3)
    state["model.base_dists.0.log_scale"] = _randn(gen, dim, std=0.2)
    state["model.base_dists.0.log_normalizer"] = torch.tensor(
        -0.5 * dim * torch.log(torch.tensor(2 * torch.pi)).item()
    )
    state["model.proj_heads.0.weight"] = _randn(gen, proj_dim, dim, 1, 1)
    state["model.proj_heads.0.bias"] = _randn(gen, proj_dim)
    if seg_classes:
        s = "model.seg_heads.0."
        state.update(
            {
                s + "0.weight": _randn(gen, half, dim, 3, 3),
                s + "0.bias": _randn(gen, half),
                s + "1.weight": torch.ones(half),
                s + "1.bias": torch.zeros(half),
                s + "1.running_mean": _randn(gen, half),
                s + "1.running_var": torch.ones(half),
                s + "1.num_batches_tracked": torch.tensor(1000),
                s + "3.weight": _randn(gen, seg_classes, half, 1, 1),
                s + "3.bias": _randn(gen, seg_classes),
            }
        )
    state["image_threshold.value"] = torch.tensor(0.61)
    state["pixel_threshold.value"] = torch.tensor(0.47)
    return state


def _foreign_transform() -> object:
    """A ``core.data.base.transforms.FusedTransforms`` object (that module exists only while pickling)."""
    module = types.ModuleType("core.data.base.transforms")

    class FusedTransforms:  # a stand-in for their albumentations-based class
        def __init__(self) -> None:
            self.image_size = None
            self.normalization = "allo"
            self.divisor = 14
            self.pad_value = (0.0, 0.0, 0.0)

    FusedTransforms.__module__ = module.__name__
    FusedTransforms.__qualname__ = "FusedTransforms"
    module.FusedTransforms = FusedTransforms
    return module, FusedTransforms()


def lightning_checkpoint(state: dict[str, torch.Tensor], arch: str = "b") -> dict:
    """The top-level Lightning dict around ``state`` (``transform`` is added by :func:`write_lightning`)."""
    backbone = "rein_dinov2" if arch == "l" else "rein_dinov2b"
    return {
        "epoch": 42,
        "global_step": 4200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"completed": 42}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'p_FPR95'}": {"best_model_score": torch.tensor(6.6)}},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(10.0)}}, "param_groups": [{"lr": 1e-5}]}],
        "lr_schedulers": [{"base_lrs": [1e-5], "last_epoch": 4200}],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "backbone": backbone,
            "flow_steps": 16,
            "subnet_type": "residual",
            "proj_dim": 128,
        },
    }


def write_lightning(path: Path, checkpoint: dict) -> Path:
    """``torch.save``s ``checkpoint`` plus a pickled foreign ``transform`` object."""
    module, transform = _foreign_transform()
    parents = ["core", "core.data", "core.data.base"]
    added = [name for name in [*parents, module.__name__] if name not in sys.modules]
    for name in parents:
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules[module.__name__] = module
    try:
        torch.save({**checkpoint, "transform": transform}, path)
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return path


def write_official_files(directory: Path, preset: str, arch: str = "b", steps: int = 16) -> dict[str, Path]:
    """Writes ``dinov2.pth``, ``rein.pth`` and ``official.ckpt`` for ``preset`` (allo | city)."""
    directory.mkdir(parents=True, exist_ok=True)
    dim = ARCHS[arch][0]
    paths = {
        "dinov2": directory / "dinov2.pth",
        "rein": directory / "rein.pth",
        "checkpoint": directory / "official.ckpt",
    }
    torch.save(dinov2_state(arch), paths["dinov2"])
    reins = {f"backbone.reins.{k}": v for k, v in rein_state(arch).items()}
    reins["backbone.patch_embed.proj.weight"] = torch.zeros(1)  # other keys in the file are ignored
    torch.save({"state_dict": reins, "meta": {"mmengine_version": "0.10.4"}}, paths["rein"])
    state = flowclas_state(dim, steps=steps, seg_classes=20 if preset == "city" else 0)
    write_lightning(paths["checkpoint"], lightning_checkpoint(state, arch))
    return paths


def official_native_checkpoint(path: Path) -> Path:
    """A small checkpoint shaped like an imported one: ViT-S (random), official 2-step flow, ALLO
    statistics, native resolution, symmetric padding; flow perturbed so scores vary."""
    from flowclas_ros.model import (
        BackboneConfig,
        FlowCLAS,
        FlowConfig,
        ModelConfig,
        PreprocessConfig,
        save_checkpoint,
    )
    from flowclas_ros.model.random_checkpoint import perturb_trainable

    cfg = ModelConfig(
        backbone=BackboneConfig(weights="none", norm=False),
        flow=FlowConfig(variant="official", steps=2, proj_dim=16),
        preprocess=PreprocessConfig(
            mean=(0.2083, 0.2124, 0.2146), std=(0.2669, 0.27, 0.2711), resize=False, padding="symmetric"
        ),
    )
    model = FlowCLAS(cfg, warn_random_backbone=False).eval()
    perturb_trainable(model, seed=3, scale=0.003)
    return save_checkpoint(model, path, threshold=0.5, image_threshold=0.6)
