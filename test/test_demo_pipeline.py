"""``make demo``'s pipeline: stage bookkeeping, report rendering, and the whole demo at tiny size.

The last test runs ``scripts/demo.py --tiny`` for real: dataset, training, torch evaluation,
a rosbag replayed live through ``anomaly_node`` (recorded), ONNX export + ONNX Runtime
evaluation, report.md/report.html with the overlay strip and GIF; then a second run that
must skip every stage.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import imageio.v3 as iio
import pytest

from flowclas_ros.demo.document import Document
from flowclas_ros.demo.runner import DemoError, Stage, StageRunner
from flowclas_ros.demo.settings import THREADS_ENV, pick_threads
from flowclas_ros.demo.stages import compare_backends
from flowclas_ros.demo.stamps import PACKAGE_DIR, StampStore, module_closure, stage_key

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("data", "train", "eval_torch", "live", "onnx", "report")


def rel(paths: list[Path]) -> set[str]:
    return {str(p.relative_to(PACKAGE_DIR)) for p in paths}


def test_module_closure_follows_imports_and_lazy_registry_strings():
    files = rel(module_closure(["flowclas_ros.runtime.base"]))
    # imported directly, and via parent packages
    assert {"runtime/base.py", "runtime/__init__.py", "__init__.py", "data/images/transforms.py"} <= files
    # named only in the lazy backend registry ("flowclas_ros.runtime.torch_backend:TorchBackend")
    assert "runtime/torch_backend.py" in files
    assert "ros/node.py" not in files
    assert not any(f.startswith("ros/") for f in rel(module_closure(["flowclas_ros.training.cli"])))
    with pytest.raises(ValueError, match="not a module"):
        module_closure(["flowclas_ros.no_such_module"])


def make_stage(tmp_path: Path, name: str, key: str, calls: list[str], fail: bool = False, **kw) -> Stage:
    out = tmp_path / name

    def run() -> None:
        calls.append(name)
        out.mkdir(exist_ok=True)
        if fail:
            raise DemoError(f"{name} failed")
        (out / "done.txt").write_text(key)

    return Stage(name, name, key=lambda: key, outputs=[out / "done.txt"], run=run, clean=[out], **kw)


def test_runner_skips_up_to_date_and_reruns_on_new_inputs_or_missing_outputs(tmp_path):
    stamps = StampStore(tmp_path / ".stamps")
    calls: list[str] = []
    runner = StageRunner(stamps, log=lambda _: None)
    runner.run(make_stage(tmp_path, "a", "k1", calls))
    token = stamps.token("a")
    runner.run(make_stage(tmp_path, "a", "k1", calls))
    assert calls == ["a"] and stamps.token("a") == token and [r.ran for r in runner.results] == [True, False]
    runner.run(make_stage(tmp_path, "a", "k2", calls))  # inputs changed
    assert calls == ["a", "a"] and stamps.token("a") != token
    (tmp_path / "a" / "done.txt").unlink()  # output removed
    runner.run(make_stage(tmp_path, "a", "k2", calls))
    assert calls == ["a", "a", "a"]


def test_downstream_key_changes_when_upstream_reruns(tmp_path):
    stamps = StampStore(tmp_path)
    stamps.mark_done("up", "same inputs", 1.0)
    first = stage_key(upstream=stamps.token("up"))
    stamps.mark_done("up", "same inputs", 1.0)  # rerun with unchanged inputs: new bytes, new token
    assert stage_key(upstream=stamps.token("up")) != first


def test_failed_stage_is_not_done_and_a_resumable_one_keeps_its_partial_output(tmp_path):
    stamps = StampStore(tmp_path / ".stamps")
    runner = StageRunner(stamps, log=lambda _: None)
    calls: list[str] = []
    with pytest.raises(DemoError, match="t failed"):
        runner.run(make_stage(tmp_path, "t", "k", calls, fail=True, resumable=True))
    assert not stamps.is_done("t", "k") and stamps.interrupted_with("t", "k")
    (tmp_path / "t" / "partial_state").write_text("x")
    runner.run(make_stage(tmp_path, "t", "k", calls, resumable=True))  # same key: resumes
    assert (tmp_path / "t" / "partial_state").exists() and stamps.is_done("t", "k")
    stamps.mark_started("t", "k")
    runner.run(make_stage(tmp_path, "t", "other", calls, resumable=True))  # new key: starts clean
    assert not (tmp_path / "t" / "partial_state").exists()


def test_compare_backends_checks_auroc_and_ap_within_tolerance():
    torch_m = {"auroc": 0.9, "ap": 0.5, "fpr95": 0.2, "image_auroc": None}
    ok = compare_backends(torch_m, {**torch_m, "auroc": 0.9004, "fpr95": 0.3}, 1e-3)
    assert ok["agree"] and ok["metrics"]["fpr95"]["abs_diff"] == pytest.approx(0.1)
    bad = compare_backends(torch_m, {**torch_m, "ap": 0.52}, 1e-3)
    assert not bad["agree"] and bad["disagreeing"] == ["ap"]
    assert not compare_backends(torch_m, {**torch_m, "ap": None}, 1e-3)["agree"]


def test_document_renders_the_same_content_as_markdown_and_html():
    doc = Document("T <1>")
    doc.heading("Metrics")
    doc.paragraph("AP `0.5` is **fine** & <ok>")
    doc.table(["a", "b|c"], [["1", "x|y"]])
    doc.images([("strip", "figures/s.png")], width=300)
    md, page = doc.markdown(), doc.html()
    assert md.startswith("# T <1>") and "| 1 | x\\|y |" in md and "![strip](figures/s.png)" in md
    assert "<h1>T &lt;1&gt;</h1>" in page and "<code>0.5</code>" in page and "<strong>fine</strong>" in page
    assert "&amp; &lt;ok&gt;" in page and '<img src="figures/s.png" alt="strip" width="300">' in page
    assert page.count("<td>") == 2


def test_pick_threads_leaves_busy_cores_alone(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert pick_threads(cpu_count=2, busy=0.1) == 2
    assert pick_threads(cpu_count=2, busy=1.2) == 1
    assert pick_threads(cpu_count=2, busy=5.0) == 1
    assert pick_threads(cpu_count=8, busy=2.0) == 6
    monkeypatch.setenv(THREADS_ENV, "3")
    assert pick_threads(cpu_count=2, busy=5.0) == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        pick_threads()


def run_demo(out: Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return proc, time.monotonic() - start


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_demo_end_to_end_then_every_stage_is_up_to_date(tmp_path):
    out = tmp_path / "demo"
    proc, _ = run_demo(out, timeout=840)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in STAGES:
        assert f"[demo] {name}: done in" in proc.stdout, name

    metrics = {
        k: json.loads((out / k / "metrics.json").read_text()) for k in ("eval_torch", "eval_ort", "live")
    }
    for name, m in metrics.items():
        assert m["n_images"] == 4, name
        assert all(finite(m[k]) for k in ("auroc", "ap", "fpr95")), (name, m)
        assert finite(m["latency_ms"]["p50"]), name
    assert metrics["live"]["live"]["n_published"] == 4
    assert metrics["live"]["live"]["n_answered"] >= 1
    agreement = json.loads((out / "eval_ort" / "agreement.json").read_text())
    assert agreement["agree"] and agreement["metrics"]["ap"]["abs_diff"] <= 1e-3
    assert (out / "onnx" / "model.onnx").stat().st_size > 1_000_000
    assert json.loads((out / "train" / "checkpoint" / "config.json").read_text())["threshold"] is not None

    report = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    torch_ap = f"{metrics['eval_torch']['ap']:.4f}"
    assert f"| pixel AP | {torch_ap} |" in report and f"<td>{torch_ap}</td>" in page
    for figure in ("figures/overlay_strip.png", "figures/overlay_stream.gif", "eval_torch/pr.png"):
        assert f"({figure})" in report and f'src="{figure}"' in page
        assert (out / figure).stat().st_size > 1000
    strip = cv2.imread(str(out / "figures" / "overlay_strip.png"))
    assert strip is not None and strip.shape[1] >= 4 * 224  # four panels per row
    gif = iio.imread(out / "figures" / "overlay_stream.gif", index=None)
    answered = metrics["live"]["live"]["n_answered"]
    assert gif.ndim == 4 and 1 <= len(gif) <= answered  # one frame per recorded answer
    recorded = re.search(
        r"Recorded from the node \(`live/recorded/`\): result (\d+), score_map (\d+)", report
    )
    assert recorded and 1 <= int(recorded[1]) <= answered and 1 <= int(recorded[2]) <= answered

    summary = proc.stdout.split("[demo] summary:", 1)[1].strip().splitlines()
    assert len(summary) == 5 and summary[0].startswith("report: ")
    assert re.search(r"\n  5 live +\d+\.\d s", proc.stdout)

    again, seconds = run_demo(out, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for name in STAGES:
        assert f"[demo] {name}: up to date" in again.stdout, name
    assert again.stdout.split("[demo] summary:", 1)[1].strip().splitlines() == summary
    assert seconds < 120
