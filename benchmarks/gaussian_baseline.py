"""PaDiM-style Gaussian baseline over the same frozen backbone, next to a trained FlowCLAS checkpoint.

The baseline fits the mean and covariance of the inlier patch features of the
training images (the backbone, layers and input size of the training config)
and scores each test cell by its Mahalanobis distance, upsampled bilinearly to
the image. ``global``: one Gaussian for all cells; ``position``: one per cell
position (PaDiM; needs a fixed input size). Both use a 0.01 * I ridge.

With ``--checkpoint`` the trained flow is scored on the same test split
through ``TorchBackend`` (the inference path the ROS node uses) and the
numbers are printed side by side. Pixel AUROC / AP / FPR95 come from
``flowclas_ros.evaluation.metrics`` (ignore label 255 excluded), at each test
image's own resolution.

Example::

    .venv/bin/python benchmarks/gaussian_baseline.py --config config/train/demo.yaml \\
        --checkpoint runs/demo/checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from flowclas_ros.config_io import load
from flowclas_ros.data.images.folder import FolderDataset
from flowclas_ros.data.images.transforms import resize_score_map, to_model_input
from flowclas_ros.evaluation.metrics import ImageMetrics, PixelMetrics
from flowclas_ros.model import FlowCLAS, load_checkpoint
from flowclas_ros.model.flowclas.anomaly_map import upsample_crop
from flowclas_ros.runtime.torch_backend import TorchBackend
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.datasets import open_folder

RIDGE = 0.01


def backbone_features(model: FlowCLAS, data: FolderDataset, batch: int, desc: str) -> torch.Tensor:
    """(N, C, h, w) features of every image of ``data`` at the model input size."""
    out = []
    for start in tqdm(range(0, len(data), batch), desc=desc, unit="batch"):
        images = [data.load_image(i) for i in range(start, min(len(data), start + batch))]
        padded, _ = model.pad_input(torch.from_numpy(to_model_input(images, model.cfg.preprocess)))
        out.append(model.extract_features(padded))
    return torch.cat(out)


class GaussianModel:
    """Mean and inverse covariance of inlier features, global or per cell position."""

    def __init__(self, feats: torch.Tensor, per_position: bool):
        x = feats.double().permute(0, 2, 3, 1)  # N, h, w, C
        channels = x.shape[-1]
        eye = torch.eye(channels, dtype=torch.float64)
        if per_position:
            cells = x.reshape(x.shape[0], -1, channels).transpose(0, 1)  # P, N, C
            self.mean = cells.mean(dim=1)
            centred = cells - self.mean[:, None]
            cov = centred.transpose(1, 2) @ centred / max(cells.shape[1] - 1, 1) + RIDGE * eye
        else:
            flat = x.reshape(-1, channels)
            self.mean = flat.mean(dim=0)
            cov = torch.cov(flat.T) + RIDGE * eye
        # Cholesky: the ridged covariance is SPD, and MKL's batched LU inverse (torch.linalg.inv) errors
        # out ("DLASWP parameter 6") and stalls on the per-position covariances of raw ViT features.
        self.precision = torch.cholesky_inverse(torch.linalg.cholesky(cov))
        self.per_position = per_position

    def distance(self, feats: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance per cell, (N, h, w)."""
        x = feats.double().permute(0, 2, 3, 1)
        n, h, w, c = x.shape
        if self.per_position:
            d = x.reshape(n, h * w, c) - self.mean[None]
            m = torch.einsum("npc,pcd,npd->np", d, self.precision, d).reshape(n, h, w)
        else:
            d = x - self.mean
            m = torch.einsum("nhwc,cd,nhwd->nhw", d, self.precision, d)
        return m.clamp(min=0).sqrt().float()


def score_metrics(maps: list[np.ndarray], data: FolderDataset, image_kind: str = "max") -> dict:
    """Pixel and image metrics of full-resolution score maps against the dataset's masks."""
    low = min(float(m.min()) for m in maps)
    high = max(float(m.max()) for m in maps)
    span = max(high - low, 1e-6)
    pixel = PixelMetrics(score_range=(low - 1e-3 * span, high + 1e-3 * span))
    image = ImageMetrics()
    for i, score in enumerate(maps):
        mask = data.load_mask(i, score.shape)
        pixel.update(score, mask)
        image.add(float(score.max() if image_kind == "max" else score.mean()), mask=mask)
    out = {k: pixel.compute()[k] for k in ("ap", "auroc", "fpr95", "n_pos", "n_neg")}
    out["image_auroc"] = image.compute()["image_auroc"]
    return out


def gaussian_maps(model: FlowCLAS, gauss: GaussianModel, feats: torch.Tensor, data: FolderDataset) -> list:
    """Distance maps upsampled to the model input, then resized to each image's size."""
    dist = gauss.distance(feats)
    in_hw = tuple(model.cfg.preprocess.input_size)
    padded_hw = (dist.shape[-2] * model.patch_size, dist.shape[-1] * model.patch_size)
    maps = upsample_crop(dist, padded_hw, in_hw).numpy()
    sizes = [data.load_image(i).shape[:2] for i in range(len(data))]
    return [resize_score_map(m, hw) for m, hw in zip(maps, sizes)]


def flow_maps(checkpoint: Path, data: FolderDataset, batch: int) -> tuple[list[np.ndarray], float]:
    """Score maps of a trained checkpoint via TorchBackend, and its mean model time per image (ms)."""
    backend = TorchBackend(load_checkpoint(checkpoint))
    maps, times = [], []
    for start in tqdm(range(0, len(data), batch), desc="flow", unit="batch"):
        images = [data.load_image(i) for i in range(start, min(len(data), start + batch))]
        for pred in backend.predict(images):
            maps.append(pred.score_map)
            times.append(pred.model_ms)
    return maps, float(np.mean(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="training config (backbone, input size, data paths)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--test", default="", help="test root (default: the config's first data.test)")
    parser.add_argument("--checkpoint", default="", help="trained checkpoint to score on the same split")
    parser.add_argument("--mode", choices=["global", "position", "both"], default="both")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load(TrainConfig, args.config, args.overrides)
    test_value = args.test or (cfg.data.test[0] if cfg.data.test else "")
    if not test_value:
        print("gaussian_baseline: error: no --test and no data.test in the config", file=sys.stderr)
        return 2
    train = open_folder(cfg.data, cfg.data.train, "data.train")
    test = open_folder(cfg.data, test_value, "data.test", require_masks=True)
    model = FlowCLAS(cfg.model, warn_random_backbone=False).eval()
    start = time.perf_counter()
    train_feats = backbone_features(model, train, args.batch, "train features")
    test_feats = backbone_features(model, test, args.batch, "test features")
    results: dict[str, dict] = {}
    for mode in ["global", "position"] if args.mode == "both" else [args.mode]:
        gauss = GaussianModel(train_feats, per_position=mode == "position")
        results[f"gaussian_{mode}"] = score_metrics(gaussian_maps(model, gauss, test_feats, test), test)
    if args.checkpoint:
        maps, model_ms = flow_maps(Path(args.checkpoint), test, args.batch)
        results["flowclas"] = score_metrics(maps, test)
        results["flowclas"]["model_ms_per_image"] = model_ms
    print(f"test split: {test.root} ({len(test)} images); train: {train.root} ({len(train)} images)")
    print(
        f"backbone {cfg.model.backbone.name} weights={cfg.model.backbone.weights} "
        f"layers={cfg.model.backbone.layers}"
    )
    print(f"{'method':<20}{'AP':>8}{'AUROC':>8}{'FPR95':>8}{'imgAUROC':>10}")
    for name, r in results.items():
        cells = [r["ap"], r["auroc"], r["fpr95"], r["image_auroc"]]
        print(
            f"{name:<20}" + "".join(f"{v:>8.4f}" if v is not None else f"{'-':>8}" for v in cells[:3]), end=""
        )
        print(f"{cells[3]:>10.4f}" if cells[3] is not None else f"{'-':>10}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
