"""``flowclas_ros.runtime.cpu`` (what this CPU can run) and ``runtime.threads`` (explicit thread settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowclas_ros.runtime import cpu, threads

REPO = Path(__file__).resolve().parents[1]


def test_cpu_info_names_the_machine():
    info = cpu.cpu_info()
    assert info.model and info.usable_cpus == len(os.sched_getaffinity(0))
    assert set(info.flags) <= set(cpu.FEATURES)
    summary = info.summary()
    assert info.model in summary and f"{info.usable_cpus} usable CPUs" in summary
    if Path("/proc/cpuinfo").is_file():
        text = Path("/proc/cpuinfo").read_text()
        for flag in info.flags:  # every reported flag is really listed by the kernel
            assert f" {flag}" in text


def test_openvino_capabilities_come_from_the_real_plugin():
    ov = pytest.importorskip("openvino")
    real = tuple(sorted(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")))
    assert cpu.openvino_capabilities() == real
    assert cpu.openvino_capabilities(ov.Core()) == real


def test_caps_override_stands_in_for_another_cpu(monkeypatch):
    monkeypatch.setenv(cpu.CPU_CAPS_ENV, "fp32, int8")
    assert cpu.openvino_capabilities() == ("FP32", "INT8")
    assert cpu.native_precisions() == ("f32", "int8")
    monkeypatch.setenv(cpu.CPU_CAPS_ENV, "BF16,FP32,INT8")
    assert cpu.native_precisions() == ("f32", "bf16", "int8")


def test_native_bf16_needs_the_instruction_set_too(monkeypatch):
    """OpenVINO listing BF16 is not enough: the CPU must have a bf16 instruction set."""
    monkeypatch.delenv(cpu.CPU_CAPS_ENV, raising=False)
    monkeypatch.setattr(cpu, "all_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert cpu.native_precisions(("BF16", "FP32", "INT8")) == ("f32", "int8")
    monkeypatch.setattr(cpu, "all_flags", lambda: frozenset({"avx2", "avx512f", "amx_bf16"}))
    assert cpu.native_precisions(("BF16", "FP32", "INT8")) == ("f32", "bf16", "int8")
    monkeypatch.setattr(cpu, "all_flags", lambda: frozenset({"asimd", "bf16", "i8mm"}))  # ARMv8.6
    # Without OpenVINO the flags alone decide. Not this machine's OpenVINO: on an AVX2-only CPU it
    # reports no BF16 (found by running this file on an emulated AMD EPYC Zen 3, 2026-12-07).
    monkeypatch.setattr(cpu, "openvino_capabilities", lambda *a, **k: None)
    assert cpu.native_precisions(None) == ("f32", "bf16", "int8")


def test_refusal_is_one_line_and_suggests_auto(monkeypatch):
    monkeypatch.setenv(cpu.CPU_CAPS_ENV, "FP32,INT8")
    message = cpu.unsupported_precision_message("bf16")
    assert "\n" not in message and cpu.cpu_model() in message
    assert "OpenVINO CPU: FP32, INT8" in message and "use precision auto" in message


@pytest.mark.parametrize(("value", "want"), [("auto", None), (None, None), (0, None), (1, 1), ("3", 3)])
def test_resolve_threads(value, want, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.resolve_threads(value) == (want or cpu.usable_cpus())


def test_auto_threads_honour_an_exported_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve_threads("auto") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "999")
    assert threads.resolve_threads("auto") == cpu.usable_cpus()


@pytest.mark.parametrize("value", ["many", -1, "1.5", 2.5])
def test_resolve_threads_rejects(value):
    with pytest.raises(ValueError, match="num_threads must be 'auto' or a positive integer"):
        threads.resolve_threads(value)


def test_openvino_thread_options_do_not_pin(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.openvino_options("auto") == {
        "INFERENCE_NUM_THREADS": cpu.usable_cpus(),
        "NUM_STREAMS": 1,
        "ENABLE_CPU_PINNING": False,
    }


def test_onnxruntime_pool_is_sized_and_does_not_spin(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytest.importorskip("onnxruntime")
    from flowclas_ros.runtime.onnx_backend import session_options

    options = session_options()
    assert options.intra_op_num_threads == cpu.usable_cpus() and options.inter_op_num_threads == 1
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert options.get_session_config_entry(key) == "0"


def test_node_process_sets_the_openmp_wait_policy_before_torch():
    """A fresh process that starts the way flowclas-node does runs torch with a passive, sized pool."""
    code = (
        "import os, sys\n"
        "from flowclas_ros.ros.node import prepare_process\n"
        "prepare_process()\n"
        "assert 'torch' not in sys.modules\n"
        "from flowclas_ros.runtime.threads import torch_threads\n"
        "n = torch_threads('auto')\n"
        "import torch\n"
        "print(os.environ['OMP_WAIT_POLICY'], n, torch.get_num_threads(), torch.get_num_interop_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    policy, count, torch_count, interop = out.stdout.split()
    assert policy == "PASSIVE" and int(count) == int(torch_count) == cpu.usable_cpus() and interop == "1"
