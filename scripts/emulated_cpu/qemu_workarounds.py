"""pytest plugin loaded by ``scripts/test_on_emulated_cpu`` only: works around qemu-user 7.2's TCG.

Under ``qemu-x86_64 -cpu EPYC-Milan`` OpenVINO's snippets (its JIT for fused subgraphs) computed
wrong results on the tiny ViT: max score 1362.1 emulated vs 267.9 natively on the same input, and
a segfault in some tests. With ``SNIPPETS_MODE: DISABLE`` the emulated result was 267.93243 (the
native one to float precision), so the fault is in the emulator's AVX2 instructions, not in the
model; the real AVX2 EPYC of issue 23 passed the OpenVINO parity tests with snippets on. This
plugin adds that one property to every CPU model the tests compile, and changes nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _openvino_without_snippets(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import openvino
    except ImportError:
        return
    compile_model = openvino.Core.compile_model

    def without_snippets(self: Any, model: Any, device_name: Any = None, config: Any = None, **kw: Any):
        if str(device_name).split(".")[0] == "CPU":
            config = {**(config or {}), "SNIPPETS_MODE": "DISABLE"}
        return compile_model(self, model, device_name, config, **kw)

    monkeypatch.setattr(openvino.Core, "compile_model", without_snippets)
