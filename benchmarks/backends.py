"""One side-by-side table of every CPU backend: torch fp32 / bf16, ONNX Runtime, OpenVINO f32 / bf16 / int8.

Usage:
    python benchmarks/backends.py [--checkpoint runs/demo/checkpoint] [--data runs/demo/data]
        [--sizes 224 448] [--threads 2] [--repeats 10] [--calib-n 32] [--node-json FILE]

For each input size the checkpoint is exported (ONNX, verified against torch) and
quantised (NNCF int8, calibrated on ``--calib-n`` training images), then the model
forward (``InferenceBackend._forward``, batch 1, input already normalised) of every
backend is timed, interleaved in alternating order so that load from other
processes hits all alike. ``|ΔAP|`` is the pixel AP on the test split at the
checkpoint's own input size against torch fp32 (the same histogram range for all,
see :func:`flowclas_ros.export.reduced.pixel_ap`). The node column (end-to-end /
model) is read from ``--node-json`` (``benchmarks/node_latency.py`` output) when
given. TensorRT rows appear only where a CUDA GPU is present. The load average is
printed with the table: on a shared machine the absolute numbers move with it.
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
from flowclas_ros.export.reduced import calibration_batches, pixel_ap, quantize_int8, set_props
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


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, float]:
    """p50 ms per function over ``repeats`` round-robin runs (alternating order)."""
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
    return {name: float(np.percentile(values, 50)) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    parser.add_argument(
        "--data", type=Path, default=Path("runs/demo/data"), help="dataset root (train/, test/)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--calib-n", type=int, default=32)
    parser.add_argument("--ap-frames", type=int, help="use only the first N test frames for |ΔAP|")
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
        latency: dict[int, dict[str, float]] = {}
        delta_ap: dict[str, float] = {}
        for size in args.sizes:
            backends = build_backends(args.checkpoint, size, work, args)
            x = verification_inputs(PreprocessConfig(input_size=(size, size)))[:1]
            fns = {name: (lambda b=b, x=x: b._forward(x)) for name, b in backends.items()}
            loads.append(os.getloadavg())
            latency[size] = time_interleaved(fns, args.repeats, args.warmup)
            loads.append(os.getloadavg())
            for name, p50 in latency[size].items():  # as measured: a long run's numbers survive an abort
                print(f"  {size}x{size} {name}: p50 {p50:.1f} ms (load {loads[-1][0]:.1f})", flush=True)
            if (size, size) == tuple(native):
                ap_ref, score_range = pixel_ap(
                    backends["torch fp32"], args.data / "test", None, args.ap_frames
                )
                delta_ap["torch fp32"] = 0.0
                for name, backend in backends.items():
                    if name != "torch fp32":
                        ap, _ = pixel_ap(backend, args.data / "test", score_range, args.ap_frames)
                        delta_ap[name] = abs(ap - ap_ref)
                print(f"  pixel AP torch fp32: {ap_ref:.4f}; |ΔAP| {delta_ap}", flush=True)
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


def print_table(latency, delta_ap, node, sizes) -> None:
    head = (
        "| backend | "
        + " | ".join(f"p50 {s}² ms | × torch fp32" for s in sizes)
        + " | \\|ΔAP\\| | node e2e/model |"
    )
    print(head)
    print("|" + "---|" * (2 + 2 * len(sizes) + 1))
    for name in latency[sizes[0]]:
        cells = []
        for s in sizes:
            p50 = latency[s][name]
            cells += [f"{p50:.1f}", f"{latency[s]['torch fp32'] / p50:.2f}×"]
        ap = f"{delta_ap[name]:.4f}" if name in delta_ap else "n/m"
        print(f"| {name} | " + " | ".join(cells) + f" | {ap} | {node.get(name, 'n/m')} |")


if __name__ == "__main__":
    sys.exit(main())
