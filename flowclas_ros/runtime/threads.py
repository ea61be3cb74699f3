"""Explicit thread settings of every backend: sized to the usable CPUs, inter-op 1, no spinning.

A robot's CPU is never idle: the node shares it with planners, drivers and a learning process.
Two thread pools that busy-wait ("spin") between operators fight for the same cores; measured on
a 2-core AMD EPYC (Zen 3, AVX2), torch's forward beside a torch process doing matmuls went from
140 to 1882 ms (13.5x). So every backend is given, where its runtime has the setting:

- **intra-op threads** = :func:`flowclas_ros.runtime.cpu.usable_cpus` (``os.sched_getaffinity``:
  a container's or ``taskset``'s limit, not the machine's core count; at most ``OMP_NUM_THREADS``
  where that is exported), or ``num_threads``;
- **inter-op threads** = 1 (the graph is a chain: nothing to run beside an operator);
- **spin / wait policy off**: ONNX Runtime ``session.intra_op.allow_spinning=0`` and
  ``session.inter_op.allow_spinning=0``; OpenMP (torch's intra-op pool, libgomp)
  ``OMP_WAIT_POLICY=PASSIVE``, which libgomp reads once when it is loaded, so it is set before
  torch is imported (:func:`passive_openmp`, called first thing by ``flowclas-node``);
  OpenVINO has no spin setting; its threads are not pinned to cores
  (``ENABLE_CPU_PINNING=False``): pinned threads of two processes on the same cores halve each
  other instead of sharing the time.

``benchmarks/backends.py --contention spin|torch`` measures these against the runtimes'
defaults, idle and beside a competing process (docs/DEPLOY.md has the figures).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from flowclas_ros.runtime.cpu import usable_cpus

AUTO = "auto"
OMP_WAIT_POLICY = "OMP_WAIT_POLICY"


def auto_threads() -> int:
    """``auto``: the CPUs this process may use, capped by ``OMP_NUM_THREADS`` where that is set.

    An exported ``OMP_NUM_THREADS`` is the operator's explicit limit for the process (the test
    harness and ``docker run`` setups use it), so every backend honours it, not only torch.
    """
    count = usable_cpus()
    limit = os.environ.get("OMP_NUM_THREADS", "").strip()
    if limit.isdigit() and int(limit) > 0:
        count = min(count, int(limit))
    return count


def resolve_threads(value: int | str | None) -> int:
    """Intra-op thread count: ``auto`` / None / 0 -> :func:`auto_threads`, else the positive integer.

    Raises:
        ValueError: Not ``auto`` and not a positive integer.
    """
    if value is None or value == AUTO or value == 0:
        return auto_threads()
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"num_threads must be 'auto' or a positive integer, got {value!r}") from None
    if count < 1 or str(value).strip() != str(count):
        raise ValueError(f"num_threads must be 'auto' or a positive integer, got {value!r}")
    return count


def thread_arg(text: str) -> int | str:
    """The argparse ``type`` of the CLIs' ``--threads`` / ``--num-threads``: ``auto`` or N >= 1.

    Raises:
        argparse.ArgumentTypeError: Anything else (a one-line usage error).
    """
    import argparse

    if text == AUTO:
        return AUTO
    try:
        resolve_threads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or N >= 1, got {text!r}") from None
    return int(text)


def passive_openmp() -> bool:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` for this process unless the user set a policy.

    Returns:
        True when the policy is in effect for torch: set (or already PASSIVE) before torch
        was imported. Once libgomp is loaded the variable is not read again.
    """
    os.environ.setdefault(OMP_WAIT_POLICY, "PASSIVE")
    return os.environ[OMP_WAIT_POLICY].upper() == "PASSIVE" and "torch" not in sys.modules


def openvino_options(threads: int | str | None) -> dict[str, Any]:
    """OpenVINO CPU ``compile_model`` thread properties (see the module doc)."""
    return {
        "INFERENCE_NUM_THREADS": resolve_threads(threads),
        "NUM_STREAMS": 1,  # one request at a time: all threads on it (the LATENCY hint's choice too)
        "ENABLE_CPU_PINNING": False,
    }


def torch_threads(threads: int | str | None) -> int:
    """Sets torch's intra-op threads (process-wide) and, while still possible, inter-op 1.

    torch accepts ``set_num_interop_threads`` only before its inter-op pool starts; later
    calls raise, and the pool (idle for this model: it runs no parallel graph) is left as is.
    """
    import torch

    count = resolve_threads(threads)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    try:
        if torch.get_num_interop_threads() != 1:
            torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # the inter-op pool already started (e.g. a training run in this process)
    return count
