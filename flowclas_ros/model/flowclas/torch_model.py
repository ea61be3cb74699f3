"""FlowCLAS: frozen backbone -> LayerNorm -> normalizing flow -> per-pixel anomaly score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.features import FeatureBatch
from flowclas_ros.model.flow import DiagonalGaussian, build_flow
from flowclas_ros.model.flow_official import OfficialFlow, OfficialGaussian
from flowclas_ros.model.flowclas.anomaly_map import likelihood_score, nll_score
from flowclas_ros.model.flowclas.loss import cell_nll
from flowclas_ros.model.flowclas.objective import FlowCLASObjective
from flowclas_ros.model.flowclas.train_config import LossConfig, SegConfig
from flowclas_ros.model.method import AnomalyMethod, register_method


@register_method("flowclas")
class FlowCLAS(AnomalyMethod):
    """Pixel-wise anomaly detector (FlowCLAS, arXiv 2411.19888); ``model.method: flowclas``, the default.

    Trainable parts: ``norm`` (LayerNorm over channels, unless
    ``flow.input_norm`` is ``none``), ``flow`` (FrEIA
    SequenceINN), ``base`` (per-channel Gaussian mean / log-sigma) and
    ``proj_head`` (1x1 conv for the contrastive loss). The backbone is frozen.

    Export hook: ``model.backbone.fix_pos_embed((H, W))`` (ViT backbones only)
    replaces timm's per-call position-embedding resampling by a constant for
    one padded input size, so ``forward`` at that size exports to ONNX
    (:meth:`AnomalyMethod.export_graph`).
    """

    def build_head(self, channels: int) -> None:
        """LayerNorm (or identity), the flow, its base distribution and the projection head."""
        cfg = self.cfg
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

    def objective(
        self, loss: LossConfig, seg: SegConfig | None, amp_dtype: torch.dtype | None
    ) -> FlowCLASObjective:
        """NLL of the inlier cells plus the latent contrastive loss (optionally a seg head)."""
        return FlowCLASObjective(self, loss, amp_dtype, seg)

    @torch.no_grad()
    def init_from_batch(self, batch: FeatureBatch) -> None:
        """Runs the flow once in train mode so every ActNorm initialises from this batch's statistics."""
        self.train()
        self.flow_forward(torch.cat([batch.mixed, batch.outlier]))

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

    def cell_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-cell scores (B, h, w) of the flow latent, ``likelihood`` or ``nll`` (``cfg.score.kind``)."""
        z, _ = self.flow_forward(feats)
        log_prob = self.log_prob_map(z)
        return likelihood_score(log_prob) if self.cfg.score.kind == "likelihood" else nll_score(log_prob)
