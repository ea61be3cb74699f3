"""One side-by-side table of every CPU backend: torch f32 / bf16, ONNX Runtime, OpenVINO f32 / bf16 / int8.

Usage:
    python benchmarks/backends.py [--checkpoint runs/demo/checkpoint] [--data runs/demo/data]
        [--sizes 224 448] [--threads auto] [--rounds 4] [--block 5] [--calib-n 32] [--node-json FILE]
        [--contention spin|torch] [--policy ours|default] [--only NAME ...]

For each input size the checkpoint is exported (ONNX, verified against torch) and
quantised (NNCF int8, calibrated on ``--calib-n`` training images), then the model
forward (``InferenceBackend._forward``, batch 1, input already normalised) of every
backend is timed in blocks: ``--block`` calls of one backend after ``--warmup`` untimed
ones, then the next backend, the order reversed every round, for ``--rounds`` rounds.
Blocks rather than one call each: a robot runs one model over and over, so its weights
stay in cache; calling six models in turn evicts them and, on a 2-core machine, made
the same OpenVINO model 1.5x slower at one thread. Alternating rounds still spread the
load of other processes over all backends.

Rows this CPU cannot run (bf16 without a native bf16 instruction set, int8 without OpenVINO's
INT8) stay in the table with the reason instead of a time. Beside each p50: the model's
GFLOP/s (its FLOPs at that size, counted by ``torch.utils.flop_counter``, / p50) and that as a
fraction of this machine's own throughput measured in the same run (a 2048² fp32 GEMM; int8
GEMM where the CPU has int8 dot products; ``benchmarks/contention.py``).

``--contention spin|torch`` times every backend idle and beside a competing process (a
one-thread busy loop, or a torch process doing matmuls with its default thread pool),
interleaved in one run, and prints p50 / p99 idle and busy side by side (targets at 224²:
busy p50 <= 2x idle beside the busy loop, <= 3x beside torch). ``--policy default`` runs the
runtimes' own thread defaults instead of ours (spinning ONNX Runtime pool, pinned OpenVINO
threads, libgomp's default wait policy), to compare the two (docs/DEPLOY.md).

``|ΔAP|`` is the pixel AP on the test split against torch f32 at each timed input size (the
same histogram range for all, see :func:`flowclas_ros.export.reduced.pixel_ap`). The node
column (end-to-end / model) is read from ``--node-json`` (``benchmarks/node_latency.py``
output) when given. TensorRT rows appear only where a CUDA GPU is present. The CPU model,
flags and load average are printed with the table: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/contention.py

from contention import (  # noqa: E402
    GEMM_OPS,
    Competitor,
    cpu_header,
    gemm_calls,
    interleaved,
    model_gflop,
    stats,
    time_calls,
)

from flowclas_ros.runtime import cpu  # noqa: E402
from flowclas_ros.runtime.threads import passive_openmp, resolve_threads, thread_arg  # noqa: E402


def random_demo_checkpoint(path: Path) -> None:
    """config/train/demo.yaml's model with random weights (trainable parts perturbed), saved to ``path``."""
    import torch
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


ROWS = (
    "torch f32",
    "torch bf16 (autocast)",
    "onnxruntime f32",
    "openvino f32",
    "openvino bf16",
    "openvino int8",
)


def skip_reasons(args: argparse.Namespace) -> dict[str, str]:
    """Rows this CPU (or this install, or ``--only``) cannot run, with the reason."""
    native = cpu.native_precisions()
    caps = cpu.openvino_capabilities()
    reasons = {}
    if not cpu.all_flags() & cpu.BF16_FLAGS:
        reasons["torch bf16 (autocast)"] = "no native bf16 (avx512_bf16 / amx_bf16 / ARM bf16) on this CPU"
    if caps is None:
        for row in ("openvino f32", "openvino bf16", "openvino int8"):
            reasons[row] = "OpenVINO is not installed (pip install openvino)"
    else:
        if "bf16" not in native:
            reasons["openvino bf16"] = f"no native bf16 (OpenVINO CPU: {', '.join(caps)})"
        if "INT8" not in caps:
            reasons["openvino int8"] = f"OpenVINO CPU has no INT8 ({', '.join(caps)})"
        elif not (args.data / "train" / "images").is_dir():
            reasons["openvino int8"] = f"no calibration images in {args.data / 'train'}"
    for row in ROWS:
        if args.only and not any(word in row for word in args.only):
            reasons.setdefault(row, "not in --only")
    return reasons


def build_backends(ckpt: Path, size: int, work: Path, args: argparse.Namespace, skip: dict[str, str]) -> dict:
    """Every CPU backend this machine runs for ``ckpt`` at ``size``² (exports cached in ``work``)."""
    import onnx
    import torch

    from flowclas_ros.export.onnx_export import export_onnx
    from flowclas_ros.export.reduced import calibration_batches, quantize_int8, set_props
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity, with_input_size
    from flowclas_ros.model.export_meta import KEY_PRECISION
    from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend
    from flowclas_ros.runtime.torch_backend import TorchBackend

    class TorchCPUBF16(TorchBackend):
        """torch with bf16 autocast on the CPU (TorchBackend's own autocast is for CUDA)."""

        def _autocast(self) -> contextlib.AbstractContextManager:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)

    fp32 = work / f"fp32-{size}.onnx"
    int8 = work / f"int8-{size}.onnx"
    if not fp32.is_file():
        start = time.perf_counter()
        export_onnx(ckpt, fp32, input_size=(size, size))
        print(f"  export {size}x{size}: {time.perf_counter() - start:.0f} s", flush=True)
    if "openvino int8" not in skip and not int8.is_file():
        start = time.perf_counter()
        preprocess = with_input_size(read_checkpoint_identity(ckpt).config, (size, size)).preprocess
        proto = quantize_int8(onnx.load(str(fp32)), calibration_batches(args.calib, preprocess, args.calib_n))
        set_props(proto, {KEY_PRECISION: "int8"})
        onnx.save(proto, str(int8))
        print(f"  int8 quantisation {size}x{size}: {time.perf_counter() - start:.0f} s", flush=True)
    size_opt = {"input_size": (size, size)}
    ours = args.policy == "ours"
    threads = args.threads if ours else None  # None: each runtime's own default
    makers = {
        "torch f32": lambda: TorchBackend(ckpt, "cpu", precision="f32", threads=threads),
        "torch bf16 (autocast)": lambda: TorchCPUBF16(ckpt, "cpu", precision="f32", threads=threads),
        "onnxruntime f32": lambda: OnnxRuntimeBackend(
            fp32, intra_op_threads=args.threads, allow_spinning=not ours, **size_opt
        ),
    }
    if cpu.openvino_capabilities() is not None:
        from flowclas_ros.runtime.openvino_backend import OpenVINOBackend

        ov = {"threads": args.threads, **size_opt}
        makers["openvino f32"] = lambda: OpenVINOBackend(fp32, precision="f32", **ov)
        makers["openvino bf16"] = lambda: OpenVINOBackend(fp32, precision="bf16", **ov)
        makers["openvino int8"] = lambda: OpenVINOBackend(int8, precision="int8", **ov)
    backends = {name: make() for name, make in makers.items() if name not in skip}
    for name, backend in backends.items():
        if name.startswith("torch"):
            backend.config.preprocess.input_size = (size, size)
    return backends


def runtime_defaults() -> None:
    """``--policy default``: OpenVINO with its own thread defaults (pinned threads, its own count)."""
    from flowclas_ros.runtime import openvino_backend

    openvino_backend.openvino_options = lambda threads: {}


def time_rounds(fns: dict, args: argparse.Namespace, competitor: Competitor | None) -> dict[str, dict]:
    """Per function: idle (and busy) p50 / p99 ms over ``--rounds`` interleaved rounds of ``--block`` calls.

    The backend order reverses every round; with a competitor each backend's idle and busy
    blocks are back to back, their order alternating too.
    """
    times = {name: {"idle": [], "busy": []} for name in fns}
    names = list(fns)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            got = interleaved(
                lambda tag, n=name: time_calls(fns[n], args.block, args.warmup), competitor, 1, r
            )
            for mode, values in got.items():
                times[name][mode] += values
    return {name: {mode: stats(v) for mode, v in t.items() if v} for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/checkpoint"))
    parser.add_argument(
        "--data", type=Path, default=Path("runs/demo/data"), help="dataset root (train/, test/)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--threads", type=thread_arg, default="auto", help="auto (usable CPUs) or N")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over all backends")
    parser.add_argument("--block", type=int, default=5, help="timed calls per backend per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each block")
    parser.add_argument("--calib-n", type=int, default=32)
    parser.add_argument("--ap-frames", type=int, help="use only the first N test frames for |ΔAP|")
    parser.add_argument("--no-ap", action="store_true", help="latency only")
    parser.add_argument("--contention", choices=("spin", "torch"), help="also time beside a competitor")
    parser.add_argument(
        "--policy",
        choices=("ours", "default"),
        default="ours",
        help="thread settings: ours (sized pools, inter-op 1, no spinning, unpinned) or the runtimes' own",
    )
    parser.add_argument("--only", nargs="+", help="only rows whose name contains one of these words")
    parser.add_argument("--node-json", type=Path, help="benchmarks/node_latency.py results (e2e / model)")
    parser.add_argument("--work-dir", type=Path, help="keep exports here (default: a temp dir)")
    parser.add_argument(
        "--random-demo-model",
        action="store_true",
        help="no trained checkpoint: write the demo config's model with random (perturbed) weights to "
        "--checkpoint and measure that (latency is the same; |ΔAP| then says less)",
    )
    args = parser.parse_args()
    if args.policy == "ours":
        passive_openmp()  # before torch starts its OpenMP pool (libgomp reads it once)
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
        runtime_defaults()
    import torch

    if args.random_demo_model:
        random_demo_checkpoint(args.checkpoint)
    if not (args.checkpoint / "config.json").is_file():
        print(f"{args.checkpoint}: no checkpoint; run `make demo` (or flowclas-train --config "
              "config/train/demo.yaml --out runs/demo) first", file=sys.stderr)  # fmt: skip
        return 1
    from flowclas_ros.export.verify import verification_inputs
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity
    from flowclas_ros.model.config import PreprocessConfig

    args.calib = args.data / "train"
    threads = resolve_threads(args.threads)
    if args.policy == "ours":  # also the GEMM rows' threads
        from flowclas_ros.runtime.threads import torch_threads

        torch_threads(args.threads)
    os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")
    native = read_checkpoint_identity(args.checkpoint).config.preprocess.input_size
    print(cpu_header())
    print(
        f"torch {torch.__version__}; policy {args.policy}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    print(f"checkpoint: {args.checkpoint} (input {native[0]}x{native[1]}); {threads} threads per backend")
    gemms, gemm_skips = gemm_calls()  # timed in the same rounds: the machine's own rate, same conditions
    skip = skip_reasons(args) | gemm_skips
    competitor = Competitor(args.contention) if args.contention else None
    loads = [os.getloadavg()]
    results: dict[int, dict] = {}
    flops: dict[int, float] = {}
    delta_ap: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="flowclas_bench_") as tmp:
            work = args.work_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            for size in args.sizes:
                flops[size] = model_gflop(args.checkpoint, size)
                backends = build_backends(args.checkpoint, size, work, args, skip)
                x = verification_inputs(PreprocessConfig(input_size=(size, size)))[:1]
                fns = {name: (lambda b=b, x=x: b._forward(x)) for name, b in backends.items()} | gemms
                results[size] = time_rounds(fns, args, competitor)
                loads.append(os.getloadavg())
                for name, t in results[size].items():  # as measured: a long run's numbers survive an abort
                    busy = f", busy p50 {t['busy']['p50']:.1f}" if "busy" in t else ""
                    print(f"  {size}x{size} {name}: idle p50 {t['idle']['p50']:.1f} ms{busy} "
                          f"(load {loads[-1][0]:.1f})", flush=True)  # fmt: skip
                if not args.no_ap and "torch f32" in backends:
                    delta_ap[size] = delta_aps(backends, args, (size, size) == tuple(native))
                    print(f"  {size}x{size} |ΔAP| vs torch f32: {delta_ap[size]}", flush=True)
                for backend in backends.values():
                    backend.close()
    finally:
        if competitor is not None:
            competitor.close()
    node = json.loads(args.node_json.read_text()) if args.node_json else {}
    print_table(results, flops, delta_ap, node, skip, args)
    print(cpu_header())
    print(
        "load average (1/5/15 min) during the run: "
        + "; ".join("/".join(f"{v:.1f}" for v in la) for la in loads)
    )
    if not torch.cuda.is_available():
        print("TensorRT: no CUDA GPU on this machine (see benchmarks/ for the GPU script)")
    return 0


def delta_aps(backends: dict, args: argparse.Namespace, native: bool) -> dict[str, float]:
    """|pixel AP - torch f32's| of every backend on the test split at the size it was timed at."""
    from flowclas_ros.export.reduced import pixel_ap

    ap_ref, score_range = pixel_ap(backends["torch f32"], args.data / "test", None, args.ap_frames)
    print(f"  pixel AP torch f32: {ap_ref:.4f}{'' if native else ' (not the trained input size)'}")
    out = {"torch f32": 0.0}
    for name, backend in backends.items():
        if name != "torch f32":
            ap, _ = pixel_ap(backend, args.data / "test", score_range, args.ap_frames)
            out[name] = round(abs(ap - ap_ref), 4)
    return out


def print_table(results, flops, delta_ap, node, skip, args) -> None:
    """The markdown table per size: p50 (p99), busy/idle, GFLOP/s and share of the GEMM rate, |ΔAP|.

    The GEMM rows are the machine's own rate, timed in the same rounds (idle p50); a backend's
    "of GEMM" is its GFLOP/s over the fp32 GEMM's (int8 rows: over the int8 GEMM's, where measured).
    """
    from flowclas_ros.export.reduced import AP_TOLERANCE

    for size in args.sizes:
        gemm = {
            kind: GEMM_OPS / (results[size][f"{kind} GEMM 2048²"]["idle"]["p50"] / 1000.0) / 1e9
            for kind in ("fp32", "int8")
            if f"{kind} GEMM 2048²" in results[size]
        }
        busy = f" | {args.contention} p50 (p99) ms | busy/idle" if args.contention else ""
        print(f"\n{size}x{size}, model {flops[size]:.1f} GFLOP per frame (GEMM rows: 17.2 GFLOP / GOP each):")
        print(
            f"| backend | idle p50 (p99) ms{busy} | GFLOP/s at idle p50 | of GEMM "
            "| \\|ΔAP\\| | node e2e/model |"
        )
        print("|---|---|" + ("---|---|" if args.contention else "") + "---|---|---|---|")
        for name in (*ROWS, "fp32 GEMM 2048²", "int8 GEMM 2048²"):
            if name in skip:
                print(f"| {name} | skipped: {skip[name]} |")
                continue
            t = results[size][name]
            work = GEMM_OPS / 1e9 if "GEMM" in name else flops[size]
            rate = work / (t["idle"]["p50"] / 1000.0)
            reference = gemm.get("int8", gemm["fp32"]) if "int8" in name else gemm["fp32"]
            cells = [f"{t['idle']['p50']:.1f} ({t['idle']['p99']:.1f})"]
            if args.contention:
                cells += [
                    f"{t['busy']['p50']:.1f} ({t['busy']['p99']:.1f})",
                    f"{t['busy']['p50'] / t['idle']['p50']:.2f}×",
                ]
            ap = delta_ap.get(size, {}).get(name)
            gate = "" if ap is None or ap <= AP_TOLERANCE else " (fails the gate)"
            cells += [f"{rate:.0f}", f"{rate / reference:.2f}", "n/m" if ap is None else f"{ap:.4f}{gate}"]
            print(f"| {name} | " + " | ".join(cells) + f" | {node.get(name, 'n/m')} |")


if __name__ == "__main__":
    sys.exit(main())
