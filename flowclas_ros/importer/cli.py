"""``flowclas-import``: the FlowCLAS authors' released files -> one of our checkpoint directories.

    flowclas-import --checkpoint best_allo.ckpt --dinov2 dinov2_vitl14_pretrain.pth
        --rein rein_dinov2l_allo.pth --preset allo --out runs/authors_allo

Reads the three files without running pickled code, builds our model with
the Rein-DINOv2 backbone and the official flow variant, maps every tensor
(``importer/keymap.py``), and writes ``config.json`` + ``flow.safetensors``
+ ``backbone.safetensors`` (DINOv2 and Reins embedded, so the checkpoint
needs no .pth at run time), with their thresholds and the sources' sha256.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from flowclas_ros.importer.keymap import (
    TOP_LEVEL,
    OfficialImportError,
    check_against,
    check_top_level,
    map_state,
    model_config,
)
from flowclas_ros.model.backbones import BackboneError
from flowclas_ros.model.checkpoint import CheckpointError, save_checkpoint, trainable_state
from flowclas_ros.model.checkpoint_meta import sha256_file
from flowclas_ros.model.config import BackboneConfig
from flowclas_ros.model.method import create_method
from flowclas_ros.model.safe_load import UnsafeFileError, safe_torch_load

_JSON_SCALARS = (str, int, float, bool, type(None))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="flowclas-import",
        description="Convert the FlowCLAS authors' released model (Lightning .ckpt + DINOv2 + Rein) "
        "into a flowclas_ros checkpoint directory.",
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="their Lightning checkpoint (best_*.ckpt)"
    )
    parser.add_argument("--dinov2", required=True, type=Path, help="Meta's dinov2_vit{b,l}14_pretrain.pth")
    parser.add_argument(
        "--rein", required=True, type=Path, help="the Rein file (rein_dinov2*_{allo,city}.pth)"
    )
    parser.add_argument("--preset", required=True, choices=("allo", "city"), help="dataset statistics")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    return parser


def import_official(checkpoint: Path, dinov2: Path, rein: Path, preset: str, out: Path) -> dict:
    """Converts the authors' files; returns a summary (see ``main``).

    Raises:
        OfficialImportError, UnsafeFileError, BackboneError, CheckpointError, OSError.
    """
    for flag, path in (("--checkpoint", checkpoint), ("--dinov2", dinov2), ("--rein", rein)):
        if not path.is_file():
            raise OfficialImportError(f"{flag} {path}: file not found")
    sources = {name: {"path": str(p.resolve()), "sha256": sha256_file(p)} for name, p in
               (("checkpoint", checkpoint), ("dinov2", dinov2), ("rein", rein))}  # fmt: skip
    lightning = check_top_level(safe_torch_load(checkpoint), str(checkpoint))
    mapped = map_state(lightning["state_dict"], str(checkpoint))
    backbone = BackboneConfig(
        weights="file",
        weights_file=sources["dinov2"]["path"],
        weights_sha256=sources["dinov2"]["sha256"],
        layers=[-1],
        norm=False,
        rein_file=sources["rein"]["path"],
        rein_sha256=sources["rein"]["sha256"],
    )
    cfg = model_config(preset, mapped, backbone)
    model = create_method(cfg, warn_random_backbone=False)  # loads and checks the DINOv2 and Rein files
    check_against(mapped, trainable_state(model), str(checkpoint))
    model.load_state_dict(mapped.tensors, strict=False)  # backbone keys come from the two .pth files
    provenance = {
        "imported_from": "FlowCLAS authors' release (github.com/TRAILab/FlowCLAS), via flowclas-import",
        "preset": preset,
        "sources": sources,
        "lightning": {k: lightning.get(k) for k in ("epoch", "global_step", "pytorch-lightning_version")},
        "hyper_parameters": {
            str(k): v
            for k, v in (lightning.get("hyper_parameters") or {}).items()
            if isinstance(v, _JSON_SCALARS)
        }
        if isinstance(lightning.get("hyper_parameters"), dict)
        else {},
        "dropped_keys": mapped.dropped,
        "dropped_top_level": sorted(k for k in lightning if k in TOP_LEVEL and k != "state_dict"),
    }
    save_checkpoint(
        model,
        out,
        threshold=mapped.pixel_threshold,
        image_threshold=mapped.image_threshold,
        provenance=provenance,
        embed_backbone=True,
    )
    return {
        "backbone": cfg.backbone.name,
        "steps": mapped.steps,
        "tensors": len(mapped.tensors),
        "dropped": len(mapped.dropped),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flowclas-import``; returns the exit status."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            summary = import_official(args.checkpoint, args.dinov2, args.rein, args.preset, args.out)
    except (OfficialImportError, UnsafeFileError, BackboneError, CheckpointError, OSError) as exc:
        print(f"flowclas-import: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.out}: {summary['backbone']}, official flow ({summary['steps']} steps), "
        f"{summary['tensors']} tensors mapped, {summary['dropped']} dropped, preset {args.preset}, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
