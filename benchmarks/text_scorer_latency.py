"""Added per-frame latency of the VL4AD text scorer (image path only, text cached).

Usage:
    .venv/bin/python benchmarks/text_scorer_latency.py [--model ViT-B-16] [--sizes 224 448]
        [--iters 10] [--threads 2] [--device cpu] [--prompts planetary_rover]

Random CLIP weights (weights: none): the numbers are latency only; the compute
does not depend on the weight values. Prints one-time prompt encoding time per
bundled prompt set, then per-frame time of ``TextScorer.forward`` (colour
re-normalisation, MaskCLIP dense image path, max-logit scoring, upsampling).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from flowclas_ros.model.vl4ad.prompts import load_prompt_set, resolve_classes
from flowclas_ros.model.vl4ad.text_scorer import TextScorer, TextScorerConfig


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_interleaved(
    fns: dict[str, Callable[[], object]], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Times each callable once per round, interleaved, so shared-CPU noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            for name, fn in fns.items():
                _sync(args.device)
                t0 = time.perf_counter()
                fn()
                _sync(args.device)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - t0) * 1000)
    return {name: sorted(t) for name, t in times.items()}


def _report(label: str, times: list[float]) -> None:
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    print(
        f"  {label:28s} median {statistics.median(times):8.1f} ms  p90 {p90:8.1f} ms  "
        f"min {times[0]:8.1f} ms  (n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", default="planetary_rover")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the random-weights warning; latency only
        t0 = time.perf_counter()
        scorer = TextScorer(TextScorerConfig(model=args.model, weights="none", prompt_set=args.prompts))
        build_s = time.perf_counter() - t0
    scorer.to(args.device)
    print(f"model {args.model} (random weights, latency only), device {args.device}, threads {args.threads}")
    print(f"build incl. first prompt encoding: {build_s * 1000:.0f} ms")

    print("\none-time prompt encoding (text tower, all prompts x templates):")
    for name in ("road", "orbital_inspection", "planetary_rover", args.prompts):
        ps = load_prompt_set(name)
        classes = resolve_classes(ps)
        n_sentences = len({p for cls in classes.prompts for p in cls}) * len(ps.templates)
        _sync(args.device)
        t0 = time.perf_counter()
        encoded = scorer.set_prompts(ps)
        _sync(args.device)
        ms = (time.perf_counter() - t0) * 1000
        state = "encoded" if encoded else "cached, not re-encoded"
        print(
            f"  {name:20s} {len(classes.names):3d} classes {n_sentences:4d} sentences {ms:8.1f} ms ({state})"
        )

    n_classes = len(scorer.class_names)
    print(f"\nper-frame forward, batch 1, prompts {args.prompts} ({n_classes} classes):")
    native = scorer.image_encoder.native_grid[0] * scorer.image_encoder.patch_size[0]
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=args.device)
        scorer.prepare((size, size))
        fns = {f"{size}x{size} text scorer": functools.partial(scorer, x)}
        if size == native:
            # Reference under the same load: CLIP's plain pooled image embedding at its native size.
            x_clip = x * scorer.input_scale + scorer.input_shift
            fns[f"{size}x{size} ref encode_image"] = functools.partial(scorer.clip.encode_image, x_clip)
        for label, times in _time_interleaved(fns, args).items():
            _report(label, times)
    print(f"load average during run: {os.getloadavg()[0]:.1f} (2 shared cores)")
    print(f"text encodes during frames: {scorer.num_text_encodes - 4} (expected 0)")


if __name__ == "__main__":
    main()
