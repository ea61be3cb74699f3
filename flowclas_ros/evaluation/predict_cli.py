"""``flowclas-predict``: score an image or a folder of images; write score maps and overlays.

For every input image ``<stem>.<ext>`` it writes ``OUT/<stem>.npy`` (the float32
score map at the image's own resolution, exactly what the node publishes on
``~/score_map``) and ``OUT/<stem>.png`` (the node's overlay: heat map blended on
the image, region boxes and the image score when a threshold is known).

Error policy (what a batch tool's user expects): problems that make the whole
run pointless (missing input, no images, bad checkpoint, unknown backend,
output that would overwrite an input) stop before any model is loaded or any
file is written, with one line and exit status 1. An image that cannot be
decoded is skipped with a one-line warning, the others are still scored, and
the exit status is 1 at the end, so scripts notice that an output is missing.

Imports are lazy: with ``--backend onnxruntime`` (or openvino / tensorrt) and an
exported model, this module pulls in no torch of its own.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowclas_ros.cli_errors import OneLineParser, one_line
from flowclas_ros.evaluation.backend_args import add_backend_arguments
from flowclas_ros.runtime.registry import backend_options
from flowclas_ros.runtime.sam2_refine import add_refine_arguments, check_refine_args, refiner_from_args

PROG = "flowclas-predict"

EXAMPLES = """examples:
  flowclas-predict --checkpoint runs/a/checkpoint --input photos/ --out pred/
  flowclas-predict --checkpoint model.onnx --backend onnxruntime --input frame.jpg --out pred/
  flowclas-predict --checkpoint ckpt --input photos/ --out pred/ \\
      --refine sam2 --sam2-checkpoint sam2.1_hiera_tiny.pt --sam2-config configs/sam2.1/sam2.1_hiera_t.yaml

Input: one image file, or a folder whose .png/.jpg/.jpeg files (not sub-folders) are scored in
sorted order. An unreadable image is skipped with a warning and the exit status is 1 at the end.
"""


class PredictInputError(ValueError):
    """The command line cannot be run (the message names the path or flag and the problem)."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = OneLineParser(
        prog=PROG,
        description="Score images with a FlowCLAS checkpoint: OUT/<stem>.npy (float32 score map at the "
        "image's resolution) and OUT/<stem>.png (heat-map overlay) per image.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="CKPT",
        help="checkpoint directory, or an exported .onnx / engine for the torch-free backends",
    )
    p.add_argument(
        "--input", required=True, metavar="FILE_OR_DIR", help="an image file or a folder of images"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    add_backend_arguments(
        p, "pixel threshold for the overlay's boxes and label (default: the checkpoint's; none: no boxes)"
    )
    ov = p.add_argument_group("overlay")
    ov.add_argument(
        "--overlay-alpha",
        type=float,
        default=0.5,
        metavar="A",
        help="heat-map weight at the top score, in [0, 1] (default: %(default)s, as the node)",
    )
    ov.add_argument(
        "--score-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        help="scores mapped to the colour map's ends (default: each image's own range)",
    )
    ov.add_argument("--no-overlay", action="store_true", help="write only the .npy score maps")
    add_refine_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def list_inputs(source: Path) -> list[Path]:
    """The image files to score: ``source`` itself, or the images directly inside it, sorted.

    Raises:
        PredictInputError: Missing path, a folder without images, or two images sharing a stem.
    """
    from flowclas_ros.data.images.folder import IMAGE_EXTENSIONS, DatasetError, list_images

    if source.is_file():
        return [source]
    if not source.exists():
        raise PredictInputError(f"--input {source} does not exist")
    if not source.is_dir():
        raise PredictInputError(f"--input {source} is neither a file nor a folder")
    try:
        images = list_images(source)
    except DatasetError as err:
        raise PredictInputError(str(err)) from err
    if not images:
        raise PredictInputError(f"--input {source}: no {'/'.join(IMAGE_EXTENSIONS)} images in this folder")
    return list(images.values())


def _check_args(args: argparse.Namespace, inputs: list[Path], out_dir: Path) -> None:
    """Cross-argument checks (raise PredictInputError with a one-line reason)."""
    if not Path(args.checkpoint).exists():
        raise PredictInputError(f"--checkpoint {args.checkpoint} does not exist")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise PredictInputError(f"--threshold must be finite, got {args.threshold}")
    if not 0.0 <= args.overlay_alpha <= 1.0:
        raise PredictInputError(f"--overlay-alpha must be in [0, 1], got {args.overlay_alpha}")
    if args.score_range is not None and not args.score_range[0] < args.score_range[1]:
        raise PredictInputError(f"--score-range needs LO < HI, got {args.score_range}")
    problem = check_refine_args(args)
    if problem:
        raise PredictInputError(problem)
    from flowclas_ros.runtime import BACKENDS as REGISTERED

    if args.backend not in REGISTERED:
        raise PredictInputError(
            f"--backend {args.backend} is not available here (registered: {', '.join(sorted(REGISTERED))})"
        )
    # Writing OUT/<stem>.png into the input folder would overwrite a PNG input.
    inputs_resolved = {path.resolve() for path in inputs}
    for path in inputs:
        for suffix in (".npy", ".png"):
            target = (out_dir / f"{path.stem}{suffix}").resolve()
            if target in inputs_resolved:
                raise PredictInputError(f"--out {out_dir} would overwrite the input image {target}")


@dataclass
class PredictSummary:
    """What a run did.

    Attributes:
        written: Stems whose outputs were written.
        skipped: (path, reason) of the inputs that could not be read.
    """

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def write_outputs(
    out_dir: Path,
    stem: str,
    image: np.ndarray,
    score_map: np.ndarray,
    image_score: float,
    threshold: float | None,
    *,
    alpha: float = 0.5,
    score_range: tuple[float, float] | None = None,
    overlay: bool = True,
) -> None:
    """Writes ``<stem>.npy`` and (unless ``overlay`` is False) the node's overlay ``<stem>.png``."""
    from flowclas_ros.data.images.folder import write_rgb
    from flowclas_ros.runtime.postprocess import find_regions, render_overlay

    score_map = np.ascontiguousarray(score_map, dtype=np.float32)
    np.save(out_dir / f"{stem}.npy", score_map, allow_pickle=False)
    if not overlay:
        return
    if threshold is None:  # no decision threshold: heat map only, no boxes or verdict
        rendered = render_overlay(image, score_map, 0.0, None, alpha, score_range, label=False)
    else:
        regions = find_regions(score_map, threshold, max_regions=32)
        rendered = render_overlay(
            image, score_map, threshold, regions, alpha, score_range, image_score=image_score
        )
    write_rgb(out_dir / f"{stem}.png", rendered)


def _run(args: argparse.Namespace) -> PredictSummary:
    from tqdm import tqdm

    from flowclas_ros.data.images.folder import DatasetError, read_rgb

    inputs = list_inputs(Path(args.input))
    out_dir = Path(args.out)
    _check_args(args, inputs, out_dir)
    refiner = refiner_from_args(args, PROG)  # package and files checked before the model loads
    options = backend_options(args.backend, threads=args.threads)  # the table names each option
    from flowclas_ros.runtime import create_backend

    summary = PredictSummary()
    try:
        backend = create_backend(args.backend, args.checkpoint, device=args.device, **options)
    except ImportError:
        raise  # a missing runtime library: its own message says what to install
    except Exception as err:  # noqa: BLE001 - e.g. ORT's InvalidProtobuf derives from no builtin error
        raise PredictInputError(
            f"--checkpoint {args.checkpoint}: the {args.backend} backend cannot load it ({one_line(err)})"
        ) from err
    if refiner is not None:
        backend = refiner.wrap(backend)
    with backend:
        threshold = args.threshold if args.threshold is not None else backend.threshold
        out_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(inputs, desc="predicting", unit="img", disable=args.no_progress, leave=False)
        for path in bar:
            try:
                image = read_rgb(path)
            except DatasetError as err:
                summary.skipped.append((str(path), str(err)))
                bar.write(f"{PROG}: warning: skipped {err}", file=sys.stderr)
                continue
            prediction = backend.predict([image])[0]
            write_outputs(
                out_dir,
                path.stem,
                image,
                prediction.score_map,
                prediction.image_score,
                threshold,
                alpha=args.overlay_alpha,
                score_range=tuple(args.score_range) if args.score_range else None,
                overlay=not args.no_overlay,
            )
            summary.written.append(path.stem)
    return summary


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as one line.

    CheckpointError only if its (torch) module was ever imported: importing it here would pull
    torch into a torch-free run, and an error of that class cannot exist unless its module is loaded.
    """
    known: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, RuntimeError)
    checkpoint = sys.modules.get("flowclas_ros.model.checkpoint")
    return known + ((checkpoint.CheckpointError,) if checkpoint is not None else ())


def main(argv: list[str] | None = None) -> int:
    """Run ``flowclas-predict``; returns the exit status (0 ok, 1 bad input / skipped images, 2 usage)."""
    args = build_parser().parse_args(argv)
    try:
        summary = _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - CLI boundary: one line, unless --debug
        if args.debug or not isinstance(err, _known_errors()):
            raise
        print(f"{PROG}: error: {one_line(err)}", file=sys.stderr)
        return 1
    n_in = len(summary.written) + len(summary.skipped)
    what = "score map(s)" if args.no_overlay else "score map(s) and overlay(s)"
    print(
        f"wrote {len(summary.written)} {what} to {args.out}"
        + (f"; {len(summary.skipped)} of {n_in} image(s) skipped (unreadable)" if summary.skipped else "")
    )
    return 1 if summary.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
