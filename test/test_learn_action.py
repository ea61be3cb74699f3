"""~/learn_nominal on a real anomaly_node process (issue 25), at tiny scale (56x56 ViT-S, few steps).

The training child is the real ``flowclas-train --init-from`` with a tiny recipe
(``FLOWCLAS_LEARN_RECIPE``). The node's checkpoint has a threshold far below every score, so
its false-alarm rate is 1 and a fine-tuned model with a calibrated threshold passes the gate;
``learn_ap_margin`` is 1 because a random-init backbone says nothing about AP.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ros_harness import (
    diagnostic_values,
    running_node,
    textured_image,
    write_params,
)
from tiny_checkpoints import tiny_checkpoint
from train_support import tiny_train_dict

pytestmark = [pytest.mark.ros, pytest.mark.alone]

NS = "/learn_action_test"
NODE = f"{NS}/anomaly_node"
TOPIC = "/learn_action_test_in/image_raw"
RUN_TIMEOUT_S = 420.0


def _recording(path: Path, frames: int = 15) -> Path:
    """A bag of ``frames`` textured 48x64 frames on /site_b/image_raw (the second site)."""
    from bag_support import START_NS, write_bag
    from bag_support import image_msg as bag_image

    stamps = [START_NS + i * 100_000_000 for i in range(frames)]
    entries = [
        ("/site_b/image_raw", t, bag_image(t, textured_image(48, 64, 100 + i))) for i, t in enumerate(stamps)
    ]
    return write_bag(path, entries)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from flowclas_ros.msg import AnomalyResult

    tmp = tmp_path_factory.mktemp("learn_action")
    (tmp / "data").mkdir()
    recipe = tmp / "site.yaml"
    recipe.write_text(yaml.safe_dump({**tiny_train_dict(tmp / "data"), "steps": 3, "val_every": 0}))
    checkpoint = tiny_checkpoint(tmp / "site_a", threshold=-1.0e6)
    params = write_params(
        tmp / "params.yaml",
        {"checkpoint": str(checkpoint), "image_topics": [TOPIC], "camera_names": ["cam"],
         "diagnostics_period_s": 0.5, "no_frame_warning_s": 60.0, "learn_ap_margin": 1.0},
    )  # fmt: skip
    env = {"FLOWCLAS_LEARN_RECIPE": str(recipe)}
    with running_node(params, NS, tmp / "node.log", "learn_action_tester", env=env) as (proc, client):
        stop = threading.Event()
        try:
            results = client.subscribe(f"{NODE}/cam/result", AnomalyResult, depth=200)
            diagnostics = client.subscribe("/diagnostics", DiagnosticArray, depth=50)
            pub = client.publisher(TOPIC, Image)
            client.wait_matched(pub)

            def camera() -> None:  # a 10 Hz camera for the whole module
                i = 0
                while not stop.is_set():
                    i += 1
                    pub.publish(client.image(textured_image(48, 64, 200 + i % 40), f"c{i}"))
                    stop.wait(0.1)

            thread = threading.Thread(target=camera, daemon=True)
            thread.start()
            yield SimpleNamespace(
                client=client, proc=proc, results=results, diagnostics=diagnostics, tmp=tmp,
                checkpoint=checkpoint, learn_dir=tmp / "site_a.learn", bag=_recording(tmp / "site_b_bag"),
            )  # fmt: skip
        finally:
            stop.set()


def _goal(**fields):
    from flowclas_ros.action import LearnNominal

    goal = LearnNominal.Goal()
    for name, value in fields.items():
        setattr(goal, name, value)
    return goal


class Goal:
    """A goal sent with an ActionClient; collects feedback."""

    def __init__(self, env, node: str = NODE, **fields):
        from rclpy.action import ActionClient

        from flowclas_ros.action import LearnNominal

        self.env, self.feedback = env, []
        if getattr(env, "action", None) is None:  # one client per test node: two would share responses
            env.action = ActionClient(env.client.node, LearnNominal, f"{node}/learn_nominal")
        self.client = env.action
        env.client.wait_for(lambda: self.client.server_is_ready(), 60, "the learn_nominal action server")
        sent = self.client.send_goal_async(_goal(**fields), feedback_callback=self._on_feedback)
        self.handle = env.client.wait_for(lambda: sent.done() and sent.result(), 60, "goal acceptance")
        assert self.handle.accepted
        self._result = self.handle.get_result_async()

    def _on_feedback(self, msg) -> None:
        self.feedback.append((time.monotonic(), msg.feedback))

    def wait_phase(self, phase: str, timeout: float = RUN_TIMEOUT_S):
        return self.env.client.wait_for(
            lambda: next((f for _, f in self.feedback if f.phase == phase), None), timeout, f"phase {phase}"
        )

    def result(self, timeout: float = RUN_TIMEOUT_S):
        done = self.env.client.wait_for(
            lambda: self._result.done() and self._result.result(), timeout, "the result"
        )
        return done.status, done.result


def _served_identity(env) -> str:
    after = time.time()

    def find():
        for stamp, msg in reversed(env.diagnostics.timed()):
            found = diagnostic_values(msg, "anomaly_node: node")
            if stamp > after and found:
                return found[2]
        return None

    return env.client.wait_for(find, 20, "node diagnostics")


def _results_continue(env) -> None:
    count = len(env.results.snapshot())
    env.client.wait_for(lambda: len(env.results.snapshot()) > count + 2, 30, "results after the run")


def test_learn_live_frames_gate_and_swap(env):
    from action_msgs.msg import GoalStatus

    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

    before = read_checkpoint_identity(env.checkpoint).sha256
    goal = Goal(env, max_frames=10, max_rate_hz=5.0, steps=3)
    status, result = goal.result()
    assert result.success, result.message
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert "\n" not in result.message
    assert Path(result.checkpoint).is_dir() and Path(result.checkpoint).resolve().is_relative_to(
        env.learn_dir.resolve()
    )
    assert result.identity == read_checkpoint_identity(result.checkpoint).sha256 != before
    assert (result.frames_used, result.frames_train, result.frames_val) == (10, 8, 2)
    assert (
        result.collecting_s > 0
        and result.training_s > 0
        and result.validating_s > 0
        and result.swapping_s > 0
    )
    assert result.false_alarm_rate_before == pytest.approx(1.0)
    assert result.false_alarm_rate_after < result.false_alarm_rate_before
    assert math.isfinite(result.ap_before) and math.isfinite(result.ap_after)
    assert math.isfinite(result.threshold)
    phases = [f.phase for _, f in goal.feedback]
    for phase in ("collecting", "training", "validating"):
        assert phase in phases, phases
    assert max(f.frames_collected for _, f in goal.feedback) >= 1
    assert any(f.total_steps == 3 for _, f in goal.feedback)
    times = [t for t, _ in goal.feedback]
    assert max(b - a for a, b in zip(times, times[1:])) < 1.5, "feedback at least about once a second"
    diag = _served_identity(env)
    assert diag["model_identity"] == result.identity and diag["learning"] == "idle"
    _results_continue(env)
    run = Path(result.run_dir)
    assert (run / "frames" / "metadata.yaml").is_file() and (run / "heldout" / "metadata.yaml").is_file()
    assert (run / "run.json").is_file() and (run / "train" / "log.csv").is_file()
    # Back to the original model for the other tests.
    from std_srvs.srv import Trigger

    back = env.client.call(Trigger, f"{NODE}/rollback_model", Trigger.Request(), timeout=120)
    assert back.success, back.message


def test_second_goal_rejected_then_cancel_keeps_the_model(env):
    from action_msgs.msg import GoalStatus

    identity = _served_identity(env)["model_identity"]
    first = Goal(env, bag=str(env.bag), steps=500)
    first.wait_phase("training")
    second = Goal(env, bag=str(env.bag), steps=1)
    status, result = second.result(60)
    assert not result.success and result.message.startswith("rejected: another learn_nominal goal is running")
    assert status == GoalStatus.STATUS_ABORTED
    assert _served_identity(env)["learning"] == "training"
    cancel = first.handle.cancel_goal_async()
    env.client.wait_for(cancel.done, 30, "the cancel response")
    status, result = first.result(60)
    assert status == GoalStatus.STATUS_CANCELED and not result.success
    assert "cancelled during training" in result.message and identity[:12] in result.message
    assert Path(result.run_dir, "frames", "metadata.yaml").is_file(), "the partial run is kept"
    assert _served_identity(env)["model_identity"] == identity
    _results_continue(env)


def test_training_child_crash_is_reported_and_the_node_keeps_serving(env):
    import psutil

    identity = _served_identity(env)["model_identity"]
    goal = Goal(env, bag=str(env.bag), steps=500)
    goal.wait_phase("training")
    node = psutil.Process(env.proc.proc.pid)

    def training_child():
        children = node.children(recursive=True)
        return next((p for p in children if "flowclas_ros.training.cli" in " ".join(p.cmdline())), None)

    trainer = env.client.wait_for(training_child, 60, "the training child")
    os.kill(trainer.pid, signal.SIGKILL)
    status, result = goal.result(60)
    assert not result.success
    assert result.message.startswith("training failed: killed by signal 9"), result.message
    assert identity[:12] in result.message
    assert _served_identity(env)["model_identity"] == identity
    _results_continue(env)
    env.proc.check_alive()


def test_gate_failure_is_not_swapped(env):
    """A new model judged at the node's own (explicit) threshold cannot lower a zero false-alarm rate."""
    (ok,) = env.client.set_parameters(NODE, {"threshold": 1.0e9})
    assert ok.successful, ok.reason
    try:
        identity = _served_identity(env)["model_identity"]
        status, result = Goal(env, bag=str(env.bag), steps=1).result()
        assert not result.success
        assert "gate failed: false-alarm rate not lower" in result.message and "not swapped" in result.message
        assert result.false_alarm_rate_before == 0.0
        assert _served_identity(env)["model_identity"] == identity
    finally:
        env.client.set_parameters(NODE, {"threshold": -1.0e6})


def test_deactivating_the_node_ends_the_run_cleanly(env):
    from lifecycle_msgs.msg import Transition

    identity = _served_identity(env)["model_identity"]
    goal = Goal(env, bag=str(env.bag), steps=500)
    goal.wait_phase("training")
    assert env.client.change_state(NODE, Transition.TRANSITION_DEACTIVATE)
    _, result = goal.result(60)
    assert not result.success
    assert result.message.startswith("the node stopped serving (deactivated"), result.message
    assert "during training" in result.message
    assert env.client.change_state(NODE, Transition.TRANSITION_ACTIVATE)
    assert _served_identity(env)["model_identity"] == identity
    _results_continue(env)


def _learn_cli(env, *args: str):
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "flowclas_ros.ros.learn_cli",
        "--node",
        NODE,
        "--bag",
        str(env.bag),
        *args,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_flowclas_learn_cli_runs_a_goal_and_ctrl_c_cancels_it(env):
    import json

    from std_srvs.srv import Trigger

    identity = _served_identity(env)["model_identity"]
    cli = _learn_cli(env, "--steps", "1", "--json")
    out, err = cli.communicate(timeout=RUN_TIMEOUT_S)
    assert cli.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["success"] and result["identity"] != identity
    assert "training" in err  # the progress bar's phase
    back = env.client.call(Trigger, f"{NODE}/rollback_model", Trigger.Request(), timeout=120)
    assert back.success, back.message

    cli = _learn_cli(env, "--steps", "500")
    env.client.wait_for(
        lambda: _served_identity(env)["learning"] == "training", 120, "the CLI's run to train"
    )
    cli.send_signal(signal.SIGINT)
    out, err = cli.communicate(timeout=90)
    assert cli.returncode == 130, (out, err)
    assert out.startswith("canceled: cancelled during training"), out
    assert "Traceback" not in err, err
    assert _served_identity(env)["model_identity"] == identity
