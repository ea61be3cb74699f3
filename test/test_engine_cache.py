from __future__ import annotations

import dataclasses
import importlib.util
import json
import multiprocessing
import time

import pytest

from flowclas_ros.runtime.engine_cache import (
    CACHE_ENV,
    EngineCacheError,
    EngineKey,
    EngineRecord,
    default_cache_dir,
    engine_cache_path,
    engine_lock,
    environment_key,
    key_mismatches,
    load_checked_engine,
    make_engine_key,
    read_record,
    resolve_engine,
    sidecar_path,
    tensorrt_version_ok,
    write_engine,
)

BASE = {
    "input_size": (448, 448),
    "precision": "fp16",
    "max_batch": 4,
    "opt_batch": 1,
    "version_compatible": False,
    "tensorrt_version": "10.3.0",
    "compute_capability": "8.7",
}
CHANGED = {
    "input_size": (448, 644),
    "precision": "fp32",
    "max_batch": 8,
    "opt_batch": 2,
    "version_compatible": True,
    "tensorrt_version": "10.3.1",
    "compute_capability": "8.6",
}


@pytest.fixture
def onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"graph-bytes-v1")
    return path


def test_key_changes_when_any_input_changes(onnx_file):
    base = make_engine_key(onnx_file, **BASE)
    assert base == make_engine_key(onnx_file, **BASE)  # deterministic
    digests = {base.digest()}
    for name, value in CHANGED.items():
        options = {**BASE, name: value}
        key = make_engine_key(onnx_file, **options)
        assert key.digest() not in digests, name
        digests.add(key.digest())
        assert key_mismatches(base, key) or name == "tensorrt_version", name
    onnx_file.write_bytes(b"graph-bytes-v2")  # the ONNX hash is part of the key
    changed = make_engine_key(onnx_file, **BASE)
    assert changed.digest() not in digests
    assert any("onnx_sha256" in p for p in key_mismatches(base, changed))
    key_fields = {f.name for f in dataclasses.fields(EngineKey)}
    assert key_fields - {"input_shape", "onnx_sha256"} == set(CHANGED) - {"input_size"}  # all varied


def test_key_fields_and_round_trip(onnx_file):
    key = make_engine_key(onnx_file, **BASE)
    assert key.input_shape == (1, 3, 448, 448)
    assert EngineKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    assert make_engine_key(onnx_file, **{**BASE, "opt_batch": 9}).opt_batch == 4  # clamped to max_batch
    assert make_engine_key(onnx_file, **{**BASE, "precision": "fp16-all"}).precision == "fp16-all"
    with pytest.raises(ValueError, match="precision"):
        make_engine_key(onnx_file, **{**BASE, "precision": "int8"})
    with pytest.raises(ValueError):
        EngineKey.from_dict({**key.to_dict(), "extra": 1})


def test_tensorrt_version_rule():
    assert tensorrt_version_ok("10.3.0", "10.3.0", False)
    assert not tensorrt_version_ok("10.3.0", "10.3.1", False)
    assert tensorrt_version_ok("10.3.0", "10.7.0", True)  # version-compatible: later 10.x runtime
    assert not tensorrt_version_ok("10.7.0", "10.3.0", True)  # never an older runtime
    assert not tensorrt_version_ok("10.3.0", "11.0.0", True)


def test_cache_paths(tmp_path, monkeypatch, onnx_file):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    key = make_engine_key(onnx_file, **BASE)
    path = engine_cache_path(None, key)
    assert path.parent == tmp_path / "c" / "tensorrt" and key.digest().startswith(path.stem)
    assert sidecar_path(path).name == path.name + ".json"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "flowclas_ros"


class Builder:
    """Stands in for the TensorRT build step: returns distinct bytes and counts calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"engine-{self.calls}".encode()


def test_resolve_builds_once_then_loads(tmp_path, onnx_file):
    key = make_engine_key(onnx_file, **BASE)
    engine_path = tmp_path / "m.engine"
    build = Builder()
    data, record = resolve_engine(engine_path, key, build, {"flowclas.x": "1"}, onnx_file)
    assert data == b"engine-1" and build.calls == 1 and record.key == key
    assert read_record(engine_path).metadata == {"flowclas.x": "1"}
    data, _ = resolve_engine(engine_path, key, build, {})
    assert data == b"engine-1" and build.calls == 1  # cache hit


def test_mismatched_engine_is_rebuilt_or_refused(tmp_path, onnx_file):
    key = make_engine_key(onnx_file, **BASE)
    engine_path = tmp_path / "m.engine"
    build = Builder()
    resolve_engine(engine_path, key, build, {})
    other_gpu = dataclasses.replace(key, compute_capability="7.2")
    with pytest.raises(EngineCacheError, match="compute_capability: engine has '8.7', need '7.2'"):
        resolve_engine(engine_path, other_gpu, None, {})
    data, record = resolve_engine(engine_path, other_gpu, build, {})
    assert data == b"engine-2" and build.calls == 2 and read_record(engine_path).key == other_gpu
    newer_trt = dataclasses.replace(other_gpu, tensorrt_version="10.4.0")
    with pytest.raises(EngineCacheError, match="built with TensorRT 10.3.0, running 10.4.0"):
        load_checked_engine(engine_path, newer_trt)


def test_engine_without_sidecar_or_with_changed_bytes_is_refused(tmp_path, onnx_file):
    key = make_engine_key(onnx_file, **BASE)
    engine_path = tmp_path / "m.engine"
    write_engine(engine_path, b"engine", EngineRecord(key=key, engine_sha256="", metadata={}))
    assert load_checked_engine(engine_path, key)[0] == b"engine"
    engine_path.write_bytes(b"tampered")
    with pytest.raises(EngineCacheError, match="engine bytes changed"):
        load_checked_engine(engine_path, key)
    sidecar_path(engine_path).write_text("{broken")
    with pytest.raises(EngineCacheError, match="corrupt engine key file"):
        load_checked_engine(engine_path, key)
    sidecar_path(engine_path).unlink()
    with pytest.raises(EngineCacheError, match="never loaded"):
        resolve_engine(engine_path, key, None, {})
    data, _ = resolve_engine(engine_path, key, Builder(), {})  # with a builder: rebuilt
    assert data == b"engine-1"


def test_engine_only_load_checks_this_machine(tmp_path, onnx_file):
    key = make_engine_key(onnx_file, **{**BASE, "version_compatible": True})
    engine_path = tmp_path / "m.engine"
    write_engine(engine_path, b"engine", EngineRecord(key=key, engine_sha256="", metadata={}))
    stored = read_record(engine_path).key
    later = environment_key(stored, tensorrt_version="10.7.0", compute_capability="8.7")
    assert load_checked_engine(engine_path, later)[0] == b"engine"  # version-compatible engine
    other_gpu = environment_key(stored, tensorrt_version="10.3.0", compute_capability="8.9")
    with pytest.raises(EngineCacheError, match="compute_capability"):
        load_checked_engine(engine_path, other_gpu)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT installed")
def test_builder_reports_missing_tensorrt(onnx_file):
    from flowclas_ros.runtime.tensorrt_builder import TensorRTUnavailableError, build_serialized_engine

    with pytest.raises(TensorRTUnavailableError, match="JetPack 6"):
        build_serialized_engine(onnx_file, input_size=(448, 448))


def _resolve_in_child(engine_path, onnx_file, log_path, results) -> None:
    """A second process asking for the same engine: builds only if nobody else did."""

    def build() -> bytes:
        with open(log_path, "a") as log:  # noqa: PTH123
            log.write(f"{multiprocessing.current_process().pid}\n")
        time.sleep(1.0)  # a slow build: the other process must wait, not build too
        return f"engine-of-{multiprocessing.current_process().pid}".encode()

    data, _ = resolve_engine(engine_path, make_engine_key(onnx_file, **BASE), build, {})
    results.put(data)


def test_engine_cache_lock_builds_once_across_processes(tmp_path, onnx_file):
    engine_path, log_path = tmp_path / "shared.engine", tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_resolve_in_child, args=(engine_path, onnx_file, log_path, results))
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert len(log_path.read_text().split()) == 1, "exactly one process built the engine"
    assert len(set(got)) == 1 and got[0].startswith(b"engine-of-")  # the others loaded that build


def test_engine_lock_times_out_with_one_line(tmp_path):
    target = tmp_path / "held.engine"
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()

    def hold() -> None:
        with engine_lock(target):
            held.set()
            release.wait(30)

    holder = ctx.Process(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        with pytest.raises(EngineCacheError, match="still locked by another process"):
            with engine_lock(target, timeout_s=0.5):
                pass
    finally:
        release.set()
        holder.join(30)
    with engine_lock(target, timeout_s=5):  # free again once the holder is gone
        pass


def test_old_sidecar_format_is_rebuilt_with_a_reason(tmp_path, onnx_file):
    key = make_engine_key(onnx_file, **BASE)
    engine_path = tmp_path / "old.engine"
    write_engine(engine_path, b"engine", EngineRecord(key=key, engine_sha256="", metadata={}))
    body = json.loads(sidecar_path(engine_path).read_text())
    body["format"] = 1
    sidecar_path(engine_path).write_text(json.dumps(body))
    with pytest.raises(EngineCacheError, match="sidecar format 1 .an older flowclas_ros."):
        resolve_engine(engine_path, key, None, {})
    assert resolve_engine(engine_path, key, Builder(), {})[0] == b"engine-1"
