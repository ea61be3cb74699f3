"""Shared parts of the speed scripts: the CPU header, a competing process, the machine's own GEMM rate.

A robot's CPU is never idle, so ``benchmarks/backends.py --contention spin|torch`` and
``benchmarks/node_latency.py --contention spin|torch`` time every case twice, interleaved in one
run: idle, and beside a competitor started here:

- ``spin``: a one-thread Python busy loop (a driver or planner that keeps one core busy);
- ``torch``: a torch process doing 1024² fp32 matmuls with its *default* thread pool (all
  cores, libgomp's default spin-then-sleep wait policy), as a training run would.

The competitor runs for the whole benchmark but is paused (SIGSTOP) during the idle blocks and
resumed (SIGCONT) for the busy ones, so idle and busy blocks alternate within the same minute
and share whatever else the machine is doing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

from flowclas_ros.runtime.cpu import cpu_info

COMPETITORS = {
    "spin": "while True:\n    pass\n",
    "torch": ("import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a)\n"),
}


def cpu_header() -> str:
    """The CPU model, its inference flags, OpenVINO's capabilities, usable CPUs and the load."""
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    return f"CPU: {cpu_info().summary()}; load average {load} (1/5/15 min)"


class Competitor:
    """A competing process (see the module doc), paused until :meth:`busy` resumes it."""

    def __init__(self, kind: str):
        if kind not in COMPETITORS:
            raise ValueError(f"--contention must be one of {', '.join(COMPETITORS)}, got {kind!r}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "KMP_"))}
        self.kind = kind
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[kind]], env=env)  # runtime defaults
        time.sleep(3.0 if kind == "torch" else 0.2)  # let torch import and start its pool
        self.proc.send_signal(signal.SIGSTOP)

    @contextlib.contextmanager
    def busy(self, settle_s: float = 0.3) -> Iterator[None]:
        """Runs the block with the competitor running."""
        self.proc.send_signal(signal.SIGCONT)
        time.sleep(settle_s)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        self.proc.wait(10)


def interleaved(
    measure: Callable[[str], list[float]], competitor: Competitor | None, rounds: int, first: int = 0
) -> dict[str, list[float]]:
    """``rounds`` rounds of ``measure(tag)`` idle and (with a competitor) busy, the order alternating.

    Returns the milliseconds ``measure`` returned, by ``idle`` / ``busy``.
    """
    times: dict[str, list[float]] = {"idle": [], "busy": []}
    for r in range(first, first + rounds):
        modes = ["idle"] if competitor is None else (["idle", "busy"] if r % 2 == 0 else ["busy", "idle"])
        for mode in modes:
            with competitor.busy() if mode == "busy" else contextlib.nullcontext():
                times[mode] += measure(f"{mode}{r}")
    return times


def stats(times_ms: list[float]) -> dict[str, float]:
    """p50 / p99 / min of a list of milliseconds."""
    values = np.asarray(times_ms)
    return {
        "p50": float(np.percentile(values, 50)),
        "p99": float(np.percentile(values, 99)),
        "min": float(values.min()),
    }


def time_calls(fn: Callable[[], object], count: int, warmup: int) -> list[float]:
    """``count`` timed calls of ``fn`` (ms) after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


GEMM_SIZE = 2048
GEMM_OPS = 2.0 * GEMM_SIZE**3
"""Multiply-adds x 2 of one GEMM_SIZE² x GEMM_SIZE² product."""


def gemm_calls() -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """The machine's own throughput, timed like a backend in the same rounds: GEMMs of 2048².

    Returns ({row name: call}, {row name: why it is left out}). fp32: ``torch.mm`` (MKL /
    oneDNN, torch's threads). int8: ``torch._int_mm`` (oneDNN VNNI / AMX kernels) where the CPU
    has int8 dot-product instructions.
    """
    import torch

    from flowclas_ros.runtime import cpu

    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)
    calls: dict[str, Callable[[], object]] = {"fp32 GEMM 2048²": lambda: torch.mm(a, b)}
    skipped: dict[str, str] = {}
    if not cpu.all_flags() & cpu.INT8_DOT_FLAGS:
        skipped["int8 GEMM 2048²"] = "no int8 dot-product instructions (VNNI / AMX / i8mm) on this CPU"
        return calls, skipped
    qa = torch.randint(-128, 127, (GEMM_SIZE, GEMM_SIZE), dtype=torch.int8)
    qb = torch.randint(-128, 127, (GEMM_SIZE, GEMM_SIZE), dtype=torch.int8)
    try:
        torch._int_mm(qa, qb)
        calls["int8 GEMM 2048²"] = lambda: torch._int_mm(qa, qb)
    except (RuntimeError, AttributeError) as err:
        skipped["int8 GEMM 2048²"] = f"torch._int_mm unavailable here ({err})"
    return calls, skipped


def model_gflop(checkpoint, size: int) -> float:
    """The model's forward FLOPs at ``size``² in GFLOP (``torch.utils.flop_counter``, batch 1).

    Counts matmuls and convolutions (2 FLOPs per multiply-add), which is where ViT and the
    flow spend their time; element-wise ops are left out, as in the usual GFLOP figures.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from flowclas_ros.runtime.torch_backend import TorchBackend

    backend = TorchBackend(checkpoint, "cpu", precision="f32")
    backend.config.preprocess.input_size = (size, size)
    x = np.zeros((1, 3, size, size), np.float32)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        backend._forward(x)
    backend.close()
    return counter.get_total_flops() / 1e9
