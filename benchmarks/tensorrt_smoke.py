"""TensorRT smoke test: build and run strongly typed engines (fp32 and fp16 backbone) where a GPU is.

Usage (a machine with a CUDA GPU, `tensorrt` 10.x or 11.x and cuda-python; torch only for the
export of step 2, the engines run through cuda-python as on a robot):
    python benchmarks/tensorrt_smoke.py [--input-size 224] [--steps 8] [--cameras 2] [--out DIR]

Steps, each printed with its time:
  1. a random-init ViT-S/14 + flow checkpoint (timing and parity only: weights do not matter);
  2. `flowclas-export`-equivalent ONNX exports: fp32 and --fp16 (float16 backbone), dynamic batch;
  3. engines built through TensorRTBackend (engine cache, lock, profile opt = --cameras);
  4. parity against ONNX Runtime (CPU, fp32) on the same images: max abs diff / score range;
  5. latency p50 of batch 1 and batch --cameras, and that a second backend loads from the cache;
  6. `flowclas-export --format engine --fp16 --gate-data` on a 3-image synthetic split: the AP gate
     runs the built engine against ONNX Runtime fp32 and records itself in the sidecar.
Exits 1 with one line if TensorRT or a GPU is missing, 2 if parity fails (fp32 > 1e-3, fp16 > 5e-2
of the score range) or the gated export fails. Needs nothing from the internet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("FLOWCLAS_ALLOW_RANDOM_BACKBONE", "1")

LIMITS = {"fp32": 1e-3, "fp16": 5e-2}


def _checkpoint(path: Path, steps: int, size: int) -> Path:
    from flowclas_ros.model.random_checkpoint import random_checkpoint

    # perturbed: a non-constant score map, so parity means something
    return random_checkpoint(
        path, input_size=(size, size), steps=steps, proj_dim=None, perturb=0.02, threshold=0.5, provenance={}
    )


def _timed(label: str, fn):
    start = time.perf_counter()
    value = fn()
    print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)
    return value


def _latency_ms(backend, images, repeats: int = 20) -> float:
    backend.predict(images)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.predict(images)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=8, help="flow steps")
    parser.add_argument("--cameras", type=int, default=2, help="max batch and profile opt batch")
    parser.add_argument("--out", type=Path, default=None, help="keep the files here (default: a temp dir)")
    args = parser.parse_args()

    from flowclas_ros.runtime.cuda_io import CudaError, compute_capability, device_name, runtime_version
    from flowclas_ros.runtime.tensorrt_builder import TensorRTUnavailableError, cuda_device, import_tensorrt

    try:
        trt = import_tensorrt()
        device = cuda_device("cuda")
    except (TensorRTUnavailableError, CudaError, ValueError) as exc:
        print(f"tensorrt_smoke: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(
        f"TensorRT {trt.__version__}, GPU {device_name(device)} (compute {compute_capability(device)}), "
        f"CUDA runtime {runtime_version()} (cuda-python)"
    )
    from flowclas_ros.export.onnx_export import export_onnx
    from flowclas_ros.runtime.onnx_backend import OnnxRuntimeBackend
    from flowclas_ros.runtime.tensorrt_backend import TensorRTBackend

    with tempfile.TemporaryDirectory(prefix="trt_smoke_") as tmp_dir:
        root = args.out or Path(tmp_dir)
        root.mkdir(parents=True, exist_ok=True)
        checkpoint = _checkpoint(root / "ckpt", args.steps, args.input_size)
        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(args.cameras)]
        failed = False
        for precision in ("fp32", "fp16"):
            onnx_path = root / f"model_{precision}.onnx"
            _timed(
                f"export {precision} ONNX",
                lambda p=precision, o=onnx_path: export_onnx(checkpoint, o, dynamic_batch=True, precision=p),
            )
            with OnnxRuntimeBackend(root / "model_fp32.onnx") as reference:
                want = np.stack([p.score_map for p in reference.predict(images)])
            options = {"precision": precision, "max_batch": args.cameras, "cache_dir": root / "cache"}
            backend = _timed(
                f"build {precision} engine", lambda o=onnx_path, kw=options: TensorRTBackend(o, **kw)
            )
            got = np.stack([p.score_map for p in backend.predict(images)])
            relative = float(np.abs(got - want).max()) / max(float(want.max() - want.min()), 1e-12)
            one = _latency_ms(backend, images[:1])
            batch = _latency_ms(backend, images)
            backend.close()
            again = _timed(
                f"load cached {precision} engine", lambda o=onnx_path, kw=options: TensorRTBackend(o, **kw)
            )
            cached = again.record.key
            again.close()
            verdict = "ok" if relative <= LIMITS[precision] else f"FAIL (limit {LIMITS[precision]:g})"
            failed |= relative > LIMITS[precision]
            print(
                f"{precision}: parity vs ONNX Runtime fp32 {relative:.3g} of the score range ({verdict}); "
                f"predict p50 batch 1 {one:.2f} ms, batch {args.cameras} {batch:.2f} ms; "
                f"engine key opt/max batch {cached.opt_batch}/{cached.max_batch}, "
                f"precision {cached.precision}"
            )
        failed |= not _timed(
            "gated fp16 engine export", lambda: _gated_export(checkpoint, root, args.input_size)
        )
    return 2 if failed else 0


def _gated_export(checkpoint: Path, root: Path, size: int) -> bool:
    """``flowclas-export --format engine --fp16 --gate-data`` on a tiny synthetic split; True if written."""
    import json

    from flowclas_ros.export import main as export_main
    from flowclas_ros.model.export_meta import KEY_QUALITY
    from flowclas_ros.runtime.engine_cache import read_record
    from flowclas_ros.synthetic.synthetic_scenes import SceneConfig, generate_dataset

    data = root / "gate_data"
    generate_dataset(
        data, seed=2, counts={"train": 0, "val": 0, "test": 3}, cfg=SceneConfig(size=(size, size))
    )
    out = root / "gated" / "model.engine"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--format",
        "engine",
        "--fp16",
        "--gate-data",
        str(data / "test"),
    ]
    if export_main([*argv, "--out", str(out)]) != 0:  # the CLI printed why (gate numbers or build error)
        return False
    gate = json.loads(read_record(out).metadata[KEY_QUALITY])["fp16"]
    print(f"gated fp16 engine: pixel AP {gate['ap']:.4f} vs fp32 {gate['ap_fp32']:.4f}, sidecar records it")
    return bool(gate["passed"])


if __name__ == "__main__":
    sys.exit(main())
