"""FlowCLAS: frozen backbone -> LayerNorm -> normalizing flow -> per-pixel anomaly score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.backbones import FrozenBackbone, create_backbone
from flowclas_ros.model.config import ModelConfig
from flowclas_ros.model.flow import DiagonalGaussian, build_flow
from flowclas_ros.model.flow_official import OfficialFlow, OfficialGaussian
from flowclas_ros.model.flowclas.anomaly_map import (
    GaussianBlur,
    image_score,
    likelihood_score,
    nll_score,
    upsample_crop,
)
from flowclas_ros.model.flowclas.loss import cell_nll
from flowclas_ros.model.vl4ad.fusion import fuse
from flowclas_ros.model.vl4ad.text_scorer import create_text_scorer


class FlowCLAS(nn.Module):
    """Pixel-wise anomaly detector (FlowCLAS, arXiv 2411.19888).

    Trainable parts: ``norm`` (LayerNorm over channels, unless
    ``flow.input_norm`` is ``none``), ``flow`` (FrEIA
    SequenceINN), ``base`` (per-channel Gaussian mean / log-sigma) and
    ``proj_head`` (1x1 conv for the contrastive loss). The backbone is frozen.

    Construction is deterministic in ``cfg.seed`` and leaves the global torch
    and numpy RNG states untouched.

    Export hook: ``model.backbone.fix_pos_embed((H, W))`` (ViT backbones only)
    replaces timm's per-call position-embedding resampling by a constant for
    one padded input size, so ``forward`` at that size exports to ONNX;
    ``fix_pos_embed(None)`` undoes it.

    Args:
        cfg: Model config.
        warn_random_backbone: Passed to ``create_backbone`` (False when real
            backbone weights are loaded right after construction).
    """

    def __init__(self, cfg: ModelConfig, *, warn_random_backbone: bool = True):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.backbone: FrozenBackbone = create_backbone(cfg.backbone, warn_random=warn_random_backbone)
            channels = self.backbone.feature_dim
            self.norm = nn.LayerNorm(channels) if cfg.flow.input_norm == "layernorm" else nn.Identity()
            if cfg.flow.variant == "official":  # the authors' flow; parameter names follow their checkpoint
                self.flow = OfficialFlow(channels, cfg.flow, seed=cfg.seed)
                self.base = OfficialGaussian(channels)
            else:
                self.flow = build_flow(channels, cfg.flow, seed=cfg.seed)
                self.base = DiagonalGaussian(channels)
            self.proj_head = nn.Conv2d(channels, cfg.flow.proj_dim, kernel_size=1)
            if cfg.flow.variant == "official":  # the authors' kaiming_init (mmengine): fan_out, relu, bias 0
                nn.init.kaiming_normal_(self.proj_head.weight, a=0, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(self.proj_head.bias)
            # Optional VL4AD scorer; built under the same seed so a random-init CLIP is reproducible.
            self.text_scorer = create_text_scorer(cfg.text, cfg.preprocess.mean, cfg.preprocess.std)
            if self.text_scorer is not None:
                cfg.text = self.text_scorer.cfg  # prompts resolved and embedded in the config
        self.blur = GaussianBlur(cfg.score.blur_sigma)

    @property
    def patch_size(self) -> int:
        """Input pixels per feature cell (14 for DINOv2; first-stage reduction for CNNs)."""
        return self.backbone.patch_size

    @property
    def pad_multiple(self) -> int:
        """Inputs are padded to multiples of this (= ``patch_size`` for ViTs)."""
        return self.backbone.pad_multiple

    @property
    def feature_dim(self) -> int:
        """Feature channels C entering the flow."""
        return self.backbone.feature_dim

    def train(self, mode: bool = True) -> FlowCLAS:
        """Sets train / eval mode for the trainable parts; the backbone stays in eval."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer should update (excludes backbone and fixed permutations)."""
        return [p for p in self.parameters() if p.requires_grad]

    def pad_input(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pads a normalised (B, 3, H, W) batch to multiples of ``pad_multiple``.

        ``preprocess.padding: bottom_right`` pads zeros (the mean colour after
        normalisation) at the bottom / right. ``symmetric`` pads what 0.0 on
        0..1 pixels becomes after normalisation (``-mean / std`` per channel),
        split evenly with the odd pixel at the bottom / right, as the authors
        pad before normalising. Returns the padded batch and the original (H, W).
        """
        height, width = x.shape[-2], x.shape[-1]
        pad_h = (-height) % self.pad_multiple
        pad_w = (-width) % self.pad_multiple
        if self.cfg.preprocess.padding != "symmetric":
            return F.pad(x, (0, pad_w, 0, pad_h)), (height, width)
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        mean = torch.tensor(self.cfg.preprocess.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.cfg.preprocess.std, dtype=x.dtype, device=x.device)
        border = F.pad(torch.zeros_like(x[:, :1]), pads, value=1.0)  # 1 on the padding, 0 inside
        return F.pad(x, pads) + border * (-mean / std).view(1, 3, 1, 1), (height, width)

    def pad_offset(self, padded_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[int, int]:
        """Top / left padding ``pad_input`` added (non-zero only for symmetric padding)."""
        if self.cfg.preprocess.padding != "symmetric":
            return 0, 0
        return (padded_hw[0] - image_hw[0]) // 2, (padded_hw[1] - image_hw[1]) // 2

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen backbone features (B, C, H / patch, W / patch) of a padded batch, without autograd."""
        with torch.no_grad():
            return self.backbone(x)

    def flow_forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input norm (LayerNorm over channels or none), then the flow. Differentiable.

        Returns:
            ``z`` (B, C, h, w) and the flow's total log|det J| per sample (B,).
        """
        x = self.norm(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        z, log_jac_det = self.flow(x)
        return z, log_jac_det

    def log_prob_map(self, z: torch.Tensor) -> torch.Tensor:
        """Channel-mean base log-density ``mean_c log N(z_c; mu_c, sigma_c)``, (B, h, w)."""
        return self.base.log_prob(z).mean(dim=1)

    def nll_map(self, z: torch.Tensor, log_jac_det: torch.Tensor) -> torch.Tensor:
        """Per-cell negative log-likelihood of the features, (B, h, w), in nats.

        ``nll[b, i] = -sum_c log N(z[b, c, i]; mu_c, sigma_c) - log_jac_det[b] / (h * w)``:
        the flow's per-sample log-det is shared evenly by all cells (as in the
        official code), so summing over cells gives the exact image NLL.
        """
        return cell_nll(self.base.log_prob(z), log_jac_det)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding: 1x1 conv then L2-normalised over channels, (B, proj_dim, h, w)."""
        return F.normalize(self.proj_head(z), p=2, dim=1)

    def score_features(self, feats: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Per-pixel anomaly map (B, H, W) from backbone features of a padded batch.

        Args:
            feats: Output of ``extract_features`` (B, C, h, w).
            image_hw: Original (unpadded) input size.
        """
        z, _ = self.flow_forward(feats)
        log_prob = self.log_prob_map(z)
        cell = likelihood_score(log_prob) if self.cfg.score.kind == "likelihood" else nll_score(log_prob)
        padded_hw = (feats.shape[-2] * self.patch_size, feats.shape[-1] * self.patch_size)
        offset = self.pad_offset(padded_hw, image_hw)
        return self.blur(upsample_crop(cell, padded_hw, image_hw, offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Anomaly map (B, H, W) for a normalised batch (B, 3, H, W) of any H, W (the exported graph)."""
        flow_score, text_score = self.score_components(x)
        if text_score is None:
            return flow_score
        return fuse(flow_score, text_score, self.cfg.fusion)

    def score_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The flow score map and, when text fusion is on, the text score map (else None).

        Used by ``forward`` and to calibrate the fusion normalisation.
        """
        padded, image_hw = self.pad_input(x)
        flow_score = self.score_features(self.extract_features(padded), image_hw)
        return flow_score, self.text_score(x)

    def text_score(self, x: torch.Tensor) -> torch.Tensor | None:
        """The VL4AD text score map (B, H, W) of the unpadded batch, or None when fusion is off."""
        if self.text_scorer is None or self.cfg.fusion.mode == "off":
            return None
        with torch.no_grad():
            return self.text_scorer(x)

    def fuse_text(self, flow_score: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Combines a flow score map with the text score of ``x`` per ``cfg.fusion`` (identity when off)."""
        text_score = self.text_score(x)
        return flow_score if text_score is None else fuse(flow_score, text_score, self.cfg.fusion)

    def score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the anomaly map (B, H, W) and image scores (B,) per ``cfg.score.image_score``."""
        score_map = self(x)
        return score_map, image_score(score_map, self.cfg.score.image_score)
