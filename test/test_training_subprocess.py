"""flowclas-train as real processes: SIGKILL mid-run then resume, and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_support import make_tiny_data, tiny_train_dict

from flowclas_ros.config_io import load
from flowclas_ros.model import load_checkpoint
from flowclas_ros.training.checkpointing import find_latest_state
from flowclas_ros.training.config import TrainConfig
from flowclas_ros.training.loop import Trainer

torch.set_num_threads(1)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tiny_data"), seed=5)


def write_config(path, root, **top) -> str:
    cfg = {**tiny_train_dict(root), **top}
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowclas_ros.training.cli", *args, "--no-progress"]


def test_sigkill_loses_at_most_one_interval_and_resume_matches_uninterrupted(tiny_data, tmp_path):
    config = write_config(tmp_path / "cfg.yaml", tiny_data, steps=16, checkpoint_every=1, val_every=8)
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        cli("--config", config, "--out", str(run)), env=ENV, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    try:
        while True:
            state = find_latest_state(run)
            if state is not None and int(state.name.split("_")[1]) >= 3:
                break
            assert proc.poll() is None, f"trainer exited early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint written in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = int(find_latest_state(run).name.split("_")[1])
    assert killed_at < 16, "the run finished before the kill; make it longer"
    with open(run / "log.csv", newline="") as handle:
        reached = max(int(row["step"]) for row in csv.DictReader(handle))
    assert reached - killed_at <= 1  # at most one checkpoint interval of work lost
    done = subprocess.run(cli("--config", config, "--out", str(run)), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["step"] == 16 and report["checkpoint"]
    assert report["resumed_from"] == killed_at
    with open(run / "log.csv", newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == list(range(1, 17))
    assert load_checkpoint(run / "checkpoint").threshold is not None
    # identical to an uninterrupted run
    straight = tmp_path / "straight"
    Trainer(load(TrainConfig, config), straight, progress=False).run()
    a = load_file(str(find_latest_state(straight) / "model.safetensors"))
    b = load_file(str(find_latest_state(run) / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_torchrun_two_processes_gloo(tiny_data, tmp_path):
    config = write_config(
        tmp_path / "cfg.yaml", tiny_data, steps=3, checkpoint_every=2, val_every=2, batch_size=1
    )
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "flowclas_ros.training.cli", "--config", config, "--out", str(run), "--no-progress"]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["step"] == 3 and report["checkpoint"]
    loaded = load_checkpoint(run / "checkpoint")
    metrics = loaded.provenance["val_metrics"]
    # histograms summed over both ranks: every val pixel counted once (3 images of 56x56)
    assert metrics["n_pos"] + metrics["n_neg"] + metrics["n_ignored"] == 3 * 56 * 56
    assert metrics["n_images"] == 3 and loaded.threshold is not None
    with open(run / "log.csv", newline="") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [1, 2, 3]
    assert find_latest_state(run).name == "step_00000003"
