"""Where OpenVINO spends a forward: per-operation profile of an export, and attention in isolation.

Usage (inside the dev environment, `source scripts/env.sh`):
    python benchmarks/openvino_profile.py --onnx model.onnx [--precision bf16] [--threads 2]
        [--tokens 1025 --heads 6 --head-dim 64]

Part 1 runs the exported model (``flowclas-export``; an int8 export runs with precision
int8) with OpenVINO's ``PERF_COUNT`` and sums the per-node times by kind: the fused
attention kernels (a CPU "Subgraph" holding a Softmax), linear layers (FullyConnected),
and the rest by operation type. Part 2 times one attention layer alone, as the CPU plugin
runs it: fused bf16 (QKᵀ, softmax, ·V), its two matmuls without the softmax, and int8
variants with FakeQuantize on Q/K and on the softmax output / V. At 448² (1025 tokens of
ViT-S/14) the fused attention was ~47 % of the forward and within ~1.4x of its matmuls,
and every int8 variant was slower than bf16: the bound on CPU speed-ups in
docs/DEPLOY.md. The load average is printed: on a shared machine the numbers move with it.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import numpy as np


def _median_ms(request, inputs, repeats: int) -> float:
    for _ in range(3):
        request.infer(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer(inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def _options(precision: str, threads: int, profile: bool = False) -> dict:
    hint = "bf16" if precision in ("bf16", "int8") else "f32"
    options = {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
    }
    return {**options, "PERF_COUNT": True} if profile else options


def model_profile(core, onnx_path: str, precision: str, threads: int, repeats: int) -> None:
    """Part 1: p50 of the whole forward and its per-kind breakdown (mean of ``repeats`` profiled runs)."""
    compiled = core.compile_model(onnx_path, "CPU", _options(precision, threads, profile=True))
    request = compiled.create_infer_request()
    shape = [d.get_length() for d in compiled.inputs[0].get_partial_shape()]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    p50 = _median_ms(request, {0: x}, repeats)
    attention = {  # runtime nodes that fused a Softmax: the attention kernels
        op.get_friendly_name()
        for op in compiled.get_runtime_model().get_ordered_ops()
        if "Softmax" in str(op.get_rt_info()["originalLayersNames"].astype(str))
    }
    kinds: collections.Counter[str] = collections.Counter()
    for _ in range(repeats):
        request.infer({0: x})
        for node in request.get_profiling_info():
            if node.node_name in attention:
                kind = "attention (fused QK^T, softmax, V)"
            elif node.node_type.startswith("FullyConnected"):
                kind = "linear layers (FullyConnected)"
            else:
                kind = node.node_type
            kinds[kind] += node.real_time.total_seconds() * 1000.0 / repeats
    total = sum(kinds.values())
    print(
        f"\n{onnx_path} at {precision}, {threads} threads: forward p50 {p50:.1f} ms "
        f"(profiled sum {total:.1f})"
    )
    print("| kind | ms | share |")
    print("|---|---|---|")
    for kind, ms in kinds.most_common(10):
        print(f"| {kind} | {ms:.1f} | {ms / total:.0%} |")


def attention_alone(core, tokens: int, heads: int, head_dim: int, threads: int, repeats: int) -> None:
    """Part 2: one attention layer, bf16 fused vs matmuls only vs int8 variants."""
    import openvino as ov
    import openvino.opset13 as ops

    def fq(x, low: float, high: float):
        return ops.fake_quantize(x, np.float32(low), np.float32(high), np.float32(low), np.float32(high), 256)

    def build(kind: str):
        q, k, v = (ops.parameter([1, heads, tokens, head_dim], np.float32, name=n) for n in "qkv")
        q_scaled = ops.multiply(q, np.float32(head_dim**-0.5))
        if kind == "matmuls only (no softmax)":
            out = ops.matmul(ops.matmul(q_scaled, k, False, True), v, False, False)
        else:
            int8_qk = kind in ("int8 Q/K", "int8 Q/K/V + softmax output")
            int8_sv = kind in ("int8 softmax output + V", "int8 Q/K/V + softmax output")
            qq, kk = (fq(q_scaled, -4, 4), fq(k, -4, 4)) if int8_qk else (q_scaled, k)
            probs = ops.softmax(ops.matmul(qq, kk, False, True), -1)
            pp, vv = (fq(probs, 0, 1), fq(v, -4, 4)) if int8_sv else (probs, v)
            out = ops.matmul(pp, vv, False, False)
        return ov.Model([out], [q, k, v], kind)

    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, heads, tokens, head_dim)).astype(np.float32) for _ in range(3)]
    print(f"\none attention layer alone: {tokens} tokens, {heads} heads x {head_dim}, {threads} threads")
    print("| variant | p50 ms |")
    print("|---|---|")
    for kind in ("fused bf16", "matmuls only (no softmax)", "int8 Q/K", "int8 softmax output + V",
                 "int8 Q/K/V + softmax output"):  # fmt: skip
        request = core.compile_model(build(kind), "CPU", _options("bf16", threads)).create_infer_request()
        print(f"| {kind} | {_median_ms(request, inputs, repeats):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", help="a flowclas-export ONNX (omit for part 2 only)")
    parser.add_argument("--precision", choices=("f32", "bf16", "int8"), default="bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=1025, help="448² with ViT-S/14: 32 x 32 + 1")
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    import openvino as ov

    core = ov.Core()
    print(f"OpenVINO {ov.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (1 min)")
    if args.onnx:
        model_profile(core, args.onnx, args.precision, args.threads, args.repeats)
    attention_alone(core, args.tokens, args.heads, args.head_dim, args.threads, args.repeats)
    print(f"\nload average {os.getloadavg()[0]:.1f} (1 min) at end")


if __name__ == "__main__":
    main()
