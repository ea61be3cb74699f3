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
import os
import statistics
import time
import warnings

import torch

from flowclas_ros.model.prompts import load_prompt_set, resolve_classes
from flowclas_ros.model.text_scorer import TextScorer, TextScorerConfig


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, args: argparse.Namespace) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            if i >= args.warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)


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
        print(f"  {name:20s} {len(classes.names):3d} classes {n_sentences:4d} sentences  {ms:8.1f} ms  ({state})")

    print(f"\nper-frame text scorer forward, batch 1, prompts {args.prompts} ({len(scorer.class_names)} classes):")
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=args.device)
        scorer.prepare((size, size))
        times = _time(lambda: scorer(x), args)
        _report(f"{size}x{size} text scorer", times)
        if size == scorer.image_encoder.native_grid[0] * scorer.image_encoder.patch_size[0]:
            # Reference on the same machine/load: plain CLIP image embedding (pooled, what CLIP normally runs).
            x_clip = x * scorer.input_scale + scorer.input_shift
            _report(f"{size}x{size} ref encode_image", _time(lambda: scorer.clip.encode_image(x_clip), args))
    print(f"load average during run: {os.getloadavg()[0]:.1f} (2 shared cores)")
    print(f"text encodes during frames: {scorer.num_text_encodes - 4} (expected 0)")


if __name__ == "__main__":
    main()
