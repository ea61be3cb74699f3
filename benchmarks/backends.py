"""Backend latency and parity: torch fp32 vs ONNX Runtime on the CPU (and fp16 / ORT-CUDA on a GPU).

Usage: [OMP_WAIT_POLICY=PASSIVE] python benchmarks/backends.py [--size 448] [--threads 2] [--repeats 10]

Builds a random-init ViT-S/14 + flow checkpoint (trainable parts perturbed so the
score map is not constant) in a temp dir, exports it to ONNX (timed, verified),
and times the model forward (``InferenceBackend._forward``, batch 1, the input
already normalised) of each backend. CPU backends run interleaved, in alternating
order, so load from other processes hits both alike; the load average is printed.
Parity is the max abs difference to torch fp32 on CPU, over a photo and a noise
image, relative to the torch score range.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")  # timing only: weights do not matter

from flowclas_ros.export.verify import verification_inputs  # noqa: E402
from flowclas_ros.model import PreprocessConfig  # noqa: E402
from flowclas_ros.model.random_checkpoint import random_checkpoint  # noqa: E402
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend  # noqa: E402
from flowclas_ros.runtime.torch_backend import TorchBackend  # noqa: E402


def time_interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Runs each function ``repeats`` times, round-robin with alternating order; returns ms per run."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times


def parity(reference: np.ndarray, got: np.ndarray) -> str:
    diff = float(np.abs(got.astype(np.float64) - reference).max())
    score_range = float(reference.max() - reference.min())
    return f"max|diff| {diff:.2e} = {diff / score_range:.1e} x score range {score_range:.3g}"


def report(times: dict[str, list[float]], baseline: str) -> None:
    base = float(np.percentile(times[baseline], 50))
    for name, values in times.items():
        p50, p90 = np.percentile(values, 50), np.percentile(values, 90)
        print(
            f"  {name:<28} p50 {p50:8.1f} ms  p90 {p90:8.1f} ms  speed-up vs {baseline}: {base / p50:5.2f}x"
        )


def cpu_section(ckpt: Path, inputs: np.ndarray, args: argparse.Namespace, cache: Path) -> np.ndarray:
    torch.set_num_threads(args.threads)
    torch_cpu = TorchBackend(ckpt, "cpu", precision="fp32")
    start = time.perf_counter()
    ort_backends = {}
    for variant in args.ort_variants.split(","):
        level, _, spin = variant.partition("+")
        ort_backends[f"onnxruntime {variant}"] = OnnxRuntimeBackend(
            ckpt,
            intra_op_threads=args.threads,
            inter_op_threads=1,
            graph_optimization=level,
            allow_spinning=spin == "spin",
            cache_dir=cache,
        )
    print(f"ONNX export + verification + session setup: {time.perf_counter() - start:.1f} s")
    reference = torch_cpu._forward(inputs)
    for name, backend in ort_backends.items():
        print(f"  parity {name:<21} {parity(reference, backend._forward(inputs))}")
    x = inputs[:1]
    fns: dict[str, Callable[[], object]] = {"torch fp32": lambda: torch_cpu._forward(x)}
    fns.update({name: (lambda b=backend: b._forward(x)) for name, backend in ort_backends.items()})
    print(f"CPU latency, batch 1, {args.threads} threads each, {args.repeats} interleaved runs:")
    print(f"  load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    times = time_interleaved(fns, args.repeats, args.warmup)
    print(f"  load average after:  {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    report(times, "torch fp32")
    return reference


def gpu_section(ckpt: Path, inputs: np.ndarray, reference: np.ndarray, args: argparse.Namespace, cache: Path):
    if not torch.cuda.is_available():
        print("GPU: no CUDA GPU present on this machine; torch fp16 and ORT-CUDA not measured")
        return
    import onnxruntime as ort

    print(f"GPU: {torch.cuda.get_device_name(0)}")
    backends = {
        "torch fp32 cuda": TorchBackend(ckpt, "cuda", precision="fp32"),
        "torch fp16 cuda": TorchBackend(ckpt, "cuda", precision="fp16"),
    }
    if "CUDAExecutionProvider" in ort.get_available_providers():
        backends["onnxruntime cuda"] = OnnxRuntimeBackend(ckpt, "cuda", cache_dir=cache)
    else:
        print("  onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed): ORT-CUDA skipped")
    for name, backend in backends.items():
        print(f"  parity {name:<21} {parity(reference, backend._forward(inputs))}")
    x = inputs[:1]
    times = time_interleaved({n: (lambda b=b: b._forward(x)) for n, b in backends.items()}, args.repeats, 3)
    report(times, "torch fp32 cuda")  # _forward copies the result to the host: includes the sync


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=448, help="square input side")
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16, help="flow steps")
    parser.add_argument(
        "--ort-variants",
        default="all,all+spin",
        help="comma list of ORT graph optimisation levels (all/extended/basic), '+spin' = allow_spinning",
    )
    parser.add_argument(
        "--cache-dir", type=Path, help="keep the ONNX export here to reuse it (default: temp)"
    )
    args = parser.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    # torch's OpenMP threads spin-wait by default, which collapses under CPU contention (other
    # processes); OMP_WAIT_POLICY=PASSIVE (set before starting python) compares compute alone.
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset: OpenMP default, spinning)')}")
    print(f"model: ViT-S/14 (random init) + {args.steps}-step flow, input {args.size}x{args.size}, batch 1")
    with tempfile.TemporaryDirectory(prefix="flowclas_bench_") as tmp:
        ckpt = random_checkpoint(
            Path(tmp) / "ckpt",
            input_size=(args.size, args.size),
            steps=args.steps,
            proj_dim=None,
            perturb=0.005,  # keeps scores unsaturated
            provenance={"benchmark": "backends"},
        )
        preprocess = PreprocessConfig(input_size=(args.size, args.size))
        inputs = verification_inputs(preprocess)[[0, 4]]  # astronaut photo + uniform noise image
        cache = args.cache_dir or Path(tmp) / "cache"  # the seeded checkpoint hashes the same every run
        reference = cpu_section(ckpt, inputs, args, cache)
        gpu_section(ckpt, inputs, reference, args, cache)


if __name__ == "__main__":
    main()
