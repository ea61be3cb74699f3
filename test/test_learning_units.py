"""ROS-free parts of field learning (issue 25): interface contracts, gate, history, budget, layout."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from flowclas_ros.learning.frames import DEFAULT_FRAMES, Budget, RateLimiter
from flowclas_ros.learning.gate import Figures, decide
from flowclas_ros.learning.history import ServedModel, SwapHistory
from flowclas_ros.learning.layout import RunDir, default_learn_dir, inside

REPO_ROOT = Path(__file__).resolve().parents[1]
GOAL = [
    ("string[]", "cameras"), ("float64", "duration_s"), ("uint32", "max_frames"), ("float64", "max_rate_hz"),
    ("uint32", "steps"), ("string", "bag"),
]  # fmt: skip
FEEDBACK = [
    ("string", "phase"), ("uint32", "frames_collected"), ("uint32", "step"), ("uint32", "total_steps"),
    ("float64", "loss"), ("float64", "eta_s"),
]  # fmt: skip


def _fields(text: str) -> list[tuple[str, str]]:
    return [
        tuple(line.split()[:2]) for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_interfaces_keep_the_issue_contract_and_are_generated():
    goal, result, feedback = (REPO_ROOT / "action" / "LearnNominal.action").read_text().split("\n---\n")
    assert _fields(goal) == GOAL
    assert _fields(feedback) == FEEDBACK
    names = [name for _, name in _fields(result)]
    assert names[:4] == ["success", "message", "checkpoint", "identity"]
    for name in ("frames_used", "collecting_s", "training_s", "validating_s", "exporting_s", "swapping_s",
                 "false_alarm_rate_before", "false_alarm_rate_after", "ap_before", "ap_after", "threshold",
                 "image_threshold"):  # fmt: skip
        assert name in names, name
    request, response = (REPO_ROOT / "srv" / "LoadModel.srv").read_text().split("\n---\n")
    assert _fields(request) == [("string", "path")]
    assert _fields(response) == [("bool", "success"), ("string", "message"), ("string", "identity")]
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:srv|action)/[^"]+)"', cmake))
    assert listed == {"srv/LoadModel.srv", "action/LearnNominal.action"}


def test_gate_needs_fewer_false_alarms_and_ap_within_the_margin():
    before = Figures(false_alarm_rate=0.10, ap=0.50)
    assert decide(before, Figures(0.02, 0.49), 0.02).passed
    failed = decide(before, Figures(0.10, 0.60), 0.02)
    assert not failed.passed and "false-alarm rate not lower" in failed.reason
    failed = decide(before, Figures(0.01, 0.47), 0.02)
    assert not failed.passed and "AP fell by more than 0.02" in failed.reason
    assert not decide(before, Figures(math.nan, 0.5), 0.02).passed
    assert decide(Figures(0.1, math.nan), Figures(0.05, 0.3), 0.02).passed  # no AP before: FAR decides


def test_budget_and_rate_limiter():
    assert Budget.from_goal(0, 0) == Budget(0.0, DEFAULT_FRAMES)
    budget = Budget.from_goal(10.0, 5)
    assert not budget.done(4, 9.9) and budget.done(5, 1.0) and budget.done(0, 10.0)
    assert budget.eta_s(2, 2.0) == pytest.approx(3.0)  # 3 frames at 1 s each beats 8 s left
    with pytest.raises(ValueError, match="duration_s"):
        Budget.from_goal(-1.0, 0)
    limiter = RateLimiter(2.0)
    kept = [t for t in range(0, 2_000_000_000, 100_000_000) if limiter.accept("cam", t)]
    assert kept == [0, 500_000_000, 1_000_000_000, 1_500_000_000]
    assert all(RateLimiter(0).accept("cam", 0) for _ in range(3))


def test_layout_and_history(tmp_path):
    assert default_learn_dir("/models/site_a") == Path("/models/site_a.learn")
    assert default_learn_dir("/models/a.onnx") == Path("/models/a.onnx.learn")
    learn = tmp_path / "site_a.learn"
    with pytest.raises(ValueError, match="outside the learn directory"):
        inside(learn, learn / ".." / "elsewhere")
    first, second = RunDir(learn, "r"), RunDir(learn, "r")
    assert (first.id, second.id) == ("r", "r-2") and second.path.parent == learn / "runs"

    original = tmp_path / "site_a"
    original.mkdir()
    (original / "config.json").write_text("{}")
    history = SwapHistory(learn)
    history.start(ServedModel(str(original), "a" * 64))
    assert history.rollback_target() is None
    history.push(ServedModel(str(learn / "new"), "b" * 64), ServedModel(str(original), "a" * 64), "test")
    target = history.rollback_target()
    assert target.identity == "a" * 64
    kept = Path(target.path)
    assert kept.parent == learn / "models" and (kept / "config.json").read_text() == "{}"
    history.pop()
    assert history.rollback_target() is None
    assert [e["event"] for e in history.events()] == ["configure", "swap", "rollback"]


def test_training_command_is_the_agreed_one_with_the_checkpoints_architecture(tmp_path, monkeypatch):
    from tiny_checkpoints import tiny_checkpoint

    from flowclas_ros.learning.child import RECIPE_ENV, train_command

    recipe = tmp_path / "site.yaml"
    recipe.write_text("steps: 5\n")
    monkeypatch.setenv(RECIPE_ENV, str(recipe))
    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    command = train_command(ckpt, tmp_path / "frames", "/learn/image_raw", 7, tmp_path / "run", 1)
    assert command[1:5] == ["-m", "flowclas_ros.training.cli", "--config", str(recipe)]
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--set"]
    for expected in (f"data.train={tmp_path / 'frames'}", "data.bag.image_topic=/learn/image_raw", "steps=7",
                     "data.val=", "threads=1", "model.preprocess.input_size=[56, 56]"):  # fmt: skip
        assert expected in pairs, (expected, pairs)
    assert command[command.index("--init-from") + 1] == str(ckpt)
    assert command[command.index("--out") + 1] == str(tmp_path / "run") and command[-1] == "--no-progress"


def _autogroups_on() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def test_child_runs_niced_in_its_own_session_and_autogroup(tmp_path):
    """The child's nice, and with autogroup scheduling its session's weight, are lowered (real child)."""
    import os
    import sys
    import threading

    from flowclas_ros.learning.child import run_child

    probe = (
        "import os, pathlib, time; time.sleep(0.3); "  # the parent lowers the priority right after the start
        "group = pathlib.Path('/proc/self/autogroup'); "
        "print('nice', os.getpriority(os.PRIO_PROCESS, 0), 'sid', os.getsid(0) == os.getpid(), "
        "'autogroup', group.read_text().split()[-1] if group.exists() else 'none')"
    )
    log = tmp_path / "child.log"
    run_child([sys.executable, "-c", probe], log, threads=1, nice=7, stop=threading.Event(), why_stopped=str)
    words = log.read_text().split()
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert words[:4] == ["nice", str(min(19, base + 7)), "sid", "True"], words
    if _autogroups_on():
        assert words[5] == str(min(19, base + 7)), words
    else:
        pytest.skip("autogroup scheduling is off here: only the process nice is checked")
