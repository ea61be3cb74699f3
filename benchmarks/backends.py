"""One side-by-side table of every CPU backend: torch fp32 / bf16, ONNX Runtime, OpenVINO f32 / bf16 / int8.

Usage:
    python benchmarks/backends.py [--checkpoint runs/demo/checkpoint] [--data runs/demo/data]
        [--sizes 224 448] [--threads 2] [--rounds 4] [--block 5] [--calib-n 32] [--node-json FILE]

For each input size the checkpoint is exported (ONNX, verified against torch) and
quantised (NNCF int8, calibrated on ``--calib-n`` training images), then the model
forward (``InferenceBackend._forward``, batch 1, input already normalised) of every
backend is timed in blocks: ``--block`` calls of one backend after ``--warmup`` untimed
ones, then the next backend, the order reversed every round, for ``--rounds`` rounds.
Blocks rather than one call each: a robot runs one model over and over, so its weights
stay in cache; calling six models in turn evicts them and, on this 2-core machine, made
the same OpenVINO model 1.5x slower at one thread. Alternating rounds still spread the
load of other processes over all backends. ``|ΔAP|`` is the pixel AP on the test split
against torch fp32 at each timed input size (the same histogram range for all, see
:func:`flowclas_ros.export.reduced.pixel_ap`): the reduced precisions are judged at the
size they are timed at. The node column (end-to-end / model) is read from
``--node-json`` (``benchmarks/node_latency.py`` output) when given. TensorRT rows appear
only where a CUDA GPU is present. The load average is printed with the table: on a
shared machine the absolute numbers move with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from flowclas_ros.export.onnx_export import export_onnx
from flowclas_ros.export.reduced import (
    AP_TOLERANCE,
    calibration_batches,
    pixel_ap,
    quantize_int8,
    set_props,
)
from flowclas_ros.export.verify import verification_inputs
from flowclas_ros.model.checkpoint_meta import KEY_PRECISION, read_checkpoint_identity, with_input_size
from flowclas_ros.model.config import PreprocessConfig
from flowclas_ros.runtime.base import InferenceBackend
from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend
from flowclas_ros.runtime.openvino_backend import OpenVINOBackend
from flowclas_ros.runtime.torch_backend import TorchBackend


class TorchCPUBF16(TorchBackend):
    """torch with bf16 autocast on the CPU (TorchBackend's own autocast is for CUDA)."""

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def build_backends(
    ckpt: Path, size: int, work: Path, args: argparse.Namespace
) -> dict[str, InferenceBackend]:
    """Every CPU backend for ``ckpt`` at ``size``² (exports cached in ``work``)."""
    fp32 = work / f"fp32-{size}.onnx"
    int8 = work / f"int8-{size}.onnx"
    if not fp32.is_file():
        start = time.perf_counter()
        export_onnx(ckpt, fp32, input_size=(size, size))
        print(f"  export {size}x{size}: {time.perf_counter() - start:.0f} s", flush=True)
    if not int8.is_file():
        start = time.perf_counter()
        preprocess = with_input_size(read_checkpoint_identity(ckpt).config, (size, size)).preprocess
        proto = quantize_int8(onnx.load(str(fp32)), calibration_batches(args.calib, preprocess, args.calib_n))
        set_props(proto, {KEY_PRECISION: "int8"})
        onnx.save(proto, str(int8))
        print(f"  int8 quantisation {size}x{size}: {time.perf_counter() - start:.0f} s", flush=True)
    size_opt = {"input_size": (size, size)}
    torch_fp32 = TorchBackend(ckpt, "cpu", precision="fp32")
    torch_bf16 = TorchCPUBF16(ckpt, "cpu", precision="fp32")
    for backend in (torch_fp32, torch_bf16):
        backend.config.preprocess.input_size = (size, size)
    ov = {"threads": args.threads, **size_opt}
    return {
        "torch fp32": torch_fp32,
        "torch bf16 (autocast)": torch_bf16,
        "onnxruntime fp32": OnnxRuntimeBackend(fp32, intra_op_threads=args.threads, **size_opt),
        "openvino f32": OpenVINOBackend(fp32, precision="f32", **ov),
        "openvino bf16": OpenVINOBackend(fp32, precision="bf16", **ov),
        "openvino int8": OpenVINOBackend(int8, precision="int8", **ov),
    }


def random_demo_checkpoint(path: Path) -> None:
    """config/train/demo.yaml's model with random weights (trainable parts perturbed), saved to ``path``."""
    import yaml

    from flowclas_ros.config_io import from_dict
    from flowclas_ros.model.checkpoint import save_checkpoint
    from flowclas_ros.model.config import ModelConfig
    from flowclas_ros.model.flowclas.torch_model import FlowCLAS

    demo = Path(__file__).resolve().parents[1] / "config" / "train" / "demo.yaml"
    cfg = from_dict(ModelConfig, yaml.safe_load(demo.read_text())["model"], prefix="model.")
    torch.manual_seed(0)
    model = FlowCLAS(cfg, warn_random_backbone=False).eval()
    with torch.no_grad():
        for param in model.trainable_parameters():
            param.add_(0.02 * torch.randn(param.shape))
    save_checkpoint(model, path, provenance={"benchmark": "random demo model, NOT trained"})


def time_blocks(
    fns: dict[str, Callable[[], object]], rounds: int, block: int, warmup: int
) -> dict[str, dict[str, float]]:
    """p50 / min ms per function: ``rounds`` rounds of ``block`` timed calls each (see the module doc)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for _ in range(warmup):
                fns[name]()
            for _ in range(block):
                start = time.perf_counter()
                fns[name]()
                times[name].append((time.perf_counter() - start) * 1000.0)
    return {
        name: {"p50": float(np.percentile(values, 50)), "min": float(np.min(values))}
        for name, values in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    parser.add_argument(
        "--data", type=Path, default=Path("runs/demo/data"), help="dataset root (train/, test/)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="rounds over all backends")
    parser.add_argument("--block", type=int, default=5, help="timed calls per backend per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each block")
    parser.add_argument("--calib-n", type=int, default=32)
    parser.add_argument("--ap-frames", type=int, help="use only the first N test frames for |ΔAP|")
    parser.add_argument("--no-ap", action="store_true", help="latency only")
    parser.add_argument("--node-json", type=Path, help="benchmarks/node_latency.py results (e2e / model)")
    parser.add_argument("--work-dir", type=Path, help="keep exports here (default: a temp dir)")
    parser.add_argument(
        "--random-demo-model",
        action="store_true",
        help="no trained checkpoint: write the demo config's model with random (perturbed) weights to "
        "--checkpoint and measure that (latency is the same; |ΔAP| then says less)",
    )
    args = parser.parse_args()
    if args.random_demo_model:
        random_demo_checkpoint(args.checkpoint)
    if not (args.checkpoint / "config.json").is_file():
        print(f"{args.checkpoint}: no checkpoint; run `make demo` (or flowclas-train --config "
              "config/train/demo.yaml --out runs/demo) first", file=sys.stderr)  # fmt: skip
        return 1
    args.calib = args.data / "train"
    torch.set_num_threads(args.threads)
    os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")
    native = read_checkpoint_identity(args.checkpoint).config.preprocess.input_size
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(
        f"checkpoint: {args.checkpoint} (input {native[0]}x{native[1]}); {args.threads} threads per backend"
    )
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="flowclas_bench_") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        latency: dict[int, dict[str, dict[str, float]]] = {}
        delta_ap: dict[int, dict[str, float]] = {}
        for size in args.sizes:
            backends = build_backends(args.checkpoint, size, work, args)
            x = verification_inputs(PreprocessConfig(input_size=(size, size)))[:1]
            fns = {name: (lambda b=b, x=x: b._forward(x)) for name, b in backends.items()}
            loads.append(os.getloadavg())
            latency[size] = time_blocks(fns, args.rounds, args.block, args.warmup)
            loads.append(os.getloadavg())
            for name, t in latency[size].items():  # as measured: a long run's numbers survive an abort
                print(
                    f"  {size}x{size} {name}: p50 {t['p50']:.1f} ms, min {t['min']:.1f} "
                    f"(load {loads[-1][0]:.1f})",
                    flush=True,
                )
            if not args.no_ap:
                delta_ap[size] = delta_aps(backends, args, (size, size) == tuple(native))
                print(f"  {size}x{size} |ΔAP| vs torch fp32: {delta_ap[size]}", flush=True)
            for backend in backends.values():
                backend.close()
    node = json.loads(args.node_json.read_text()) if args.node_json else {}
    print_table(latency, delta_ap, node, args.sizes)
    print(
        "load average (1/5/15 min) during the run: "
        + "; ".join("/".join(f"{v:.1f}" for v in la) for la in loads)
    )
    if not torch.cuda.is_available():
        print("TensorRT: no CUDA GPU on this machine (see benchmarks/ for the GPU script)")
    return 0


def delta_aps(
    backends: dict[str, InferenceBackend], args: argparse.Namespace, native: bool
) -> dict[str, float]:
    """|pixel AP - torch fp32's| of every backend on the test split at the size it was timed at."""
    ap_ref, score_range = pixel_ap(backends["torch fp32"], args.data / "test", None, args.ap_frames)
    print(f"  pixel AP torch fp32: {ap_ref:.4f}{'' if native else ' (not the trained input size)'}")
    out = {"torch fp32": 0.0}
    for name, backend in backends.items():
        if name != "torch fp32":
            ap, _ = pixel_ap(backend, args.data / "test", score_range, args.ap_frames)
            out[name] = round(abs(ap - ap_ref), 4)
    return out


def print_table(latency, delta_ap, node, sizes) -> None:
    """The markdown table: p50 (and ratio to torch fp32) and |ΔAP| per size, node ratio."""
    head = "| backend | " + " | ".join(f"p50 {s}² ms | × torch fp32 | \\|ΔAP\\| {s}²" for s in sizes)
    print(head + " | node e2e/model |")
    print("|" + "---|" * (2 + 3 * len(sizes)))
    for name in latency[sizes[0]]:
        cells = []
        for s in sizes:
            p50 = latency[s][name]["p50"]
            ap = delta_ap.get(s, {}).get(name)
            ratio = latency[s]["torch fp32"]["p50"] / p50
            gate = "" if ap is None or ap <= AP_TOLERANCE else " (fails the gate)"
            cells += [f"{p50:.1f}", f"{ratio:.2f}×", "n/m" if ap is None else f"{ap:.4f}{gate}"]
        print(f"| {name} | " + " | ".join(cells) + f" | {node.get(name, 'n/m')} |")


if __name__ == "__main__":
    sys.exit(main())
