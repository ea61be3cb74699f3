"""The child processes of a learning run: command lines, CPU sharing, progress and cancel (no ROS).

Training is ``flowclas-train --init-from`` (the recordings issue's fine-tuning path) run with
this interpreter (``python -m flowclas_ros.training.cli``), so the child sees the same install.
Every child runs niced, with its thread pools limited, in its own process group (a cancel stops
it and anything it started), with its output going to a log file inside the run directory.

Why limit threads: on a 2-core AMD EPYC a torch node's forward went from 140 ms to 1882 ms p50
(13.5x) beside a torch process with its default thread pool, but only 1.9x beside one busy
thread (shared/ENVIRONMENT.md); hence the default ``learn_threads: 1``. The default
``learn_nice: 0`` is measured (README "Learn a new site"): with one thread the child already
takes at most one core, and a nice of 10 that really applies (see :func:`lower_priority`)
left the node's answer rate where it was but made learning 2.4x slower.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import flowclas_ros

SITE_RECIPE = Path("config") / "train" / "site.yaml"
RECIPE_ENV = "FLOWCLAS_LEARN_RECIPE"
"""Environment variable naming another training recipe for field learning (tests, custom sites)."""
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class ChildError(RuntimeError):
    """A child process failed; the message is one line (its last error line)."""


class Cancelled(RuntimeError):
    """The run was stopped (cancel, deactivate, shutdown); the message says by what."""


def site_recipe() -> Path:
    """``$FLOWCLAS_LEARN_RECIPE``, else ``config/train/site.yaml`` (this tree, or share/flowclas_ros).

    Raises:
        ChildError: Not found.
    """
    override = os.environ.get(RECIPE_ENV)
    if override:
        if not Path(override).is_file():
            raise ChildError(f"{RECIPE_ENV}={override}: no such training recipe")
        return Path(override)
    here = Path(flowclas_ros.__file__).resolve().parents[1] / SITE_RECIPE
    if here.is_file():
        return here
    prefix = Path(sys.prefix) / "share" / "flowclas_ros" / SITE_RECIPE
    for candidate in [prefix] + [
        Path(p) / "share" / "flowclas_ros" / SITE_RECIPE
        for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":")
        if p
    ]:
        if candidate.is_file():
            return candidate
    raise ChildError(
        f"training recipe {SITE_RECIPE} not found beside {here.parent.parent} or in share/flowclas_ros"
    )


def train_command(
    init_from: Path, frames_bag: Path, topic: str, steps: int, run_dir: Path, threads: int
) -> list[str]:
    """The agreed ``flowclas-train --init-from`` command line (issue 24's fine-tuning path).

    Args:
        init_from: The serving model's checkpoint directory.
        frames_bag: rosbag2 of the collected frames (all normal).
        topic: Image topic in that bag.
        steps: Training steps; 0 = the recipe's.
        run_dir: ``flowclas-train --out`` (inside learn_dir).
        threads: torch intra-op threads of the child.
    """
    command = [sys.executable, "-m", "flowclas_ros.training.cli", "--config", str(site_recipe())]
    command += ["--init-from", str(init_from)]
    for key, value in architecture_overrides(init_from).items():
        command += ["--set", f"{key}={value}"]
    command += ["--set", f"data.train={frames_bag}", "--set", f"data.bag.image_topic={topic}"]
    # The goal's max_rate_hz already subsampled the collection: train on every collected frame.
    command += ["--set", "data.bag.max_rate_hz=0"]
    if steps > 0:
        command += ["--set", f"steps={int(steps)}"]
    command += [
        "--set",
        "data.val=",
        "--out",
        str(run_dir),
        "--set",
        f"threads={int(threads)}",
        "--no-progress",
    ]
    return command


def architecture_overrides(checkpoint: Path) -> dict[str, str]:
    """``model.backbone.*`` and ``model.preprocess.input_size`` of the checkpoint, as ``--set`` values.

    ``--init-from`` refuses a recipe whose backbone or input size differs from the checkpoint's;
    the node fine-tunes whatever it serves, so the recipe's are replaced by the checkpoint's.
    """
    import json

    from flowclas_ros.config_io import to_dict
    from flowclas_ros.model.checkpoint_meta import read_checkpoint_identity

    model = to_dict(read_checkpoint_identity(checkpoint).config)

    def flat(data: dict, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out |= flat(value, f"{prefix}{key}.")
            elif key not in ("weights_file", "rein_file"):  # paths: the checkpoint resolves its own
                out[f"{prefix}{key}"] = json.dumps(value)
        return out

    overrides = flat(model.get("backbone") or {}, "model.backbone.")
    overrides["model.preprocess.input_size"] = json.dumps(list(model["preprocess"]["input_size"]))
    return overrides


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment plus ``extra``, every thread pool limited to ``threads``, this source tree first."""
    env = dict(os.environ, **(extra or {}))
    for name in THREAD_VARIABLES:
        env[name] = str(int(threads))
    root = str(Path(flowclas_ros.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Progress:
    """Training progress read from ``RUN_DIR/log.csv``."""

    step: int = 0
    loss: float = math.nan
    time_s: float = math.nan


def read_progress(log_csv: Path) -> Progress:
    """The last row of ``log.csv`` (step, loss, time_s); an absent or empty file is step 0."""
    try:
        with open(log_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return Progress()
    for row in reversed(rows):
        try:
            step = int(float(row.get("step") or 0))
        except ValueError:
            continue
        return Progress(step, _float(row.get("loss")), _float(row.get("time_s")))
    return Progress()


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def last_error_line(log: Path) -> str:
    """The last meaningful line of a child's log (its one-line error, or a traceback's last line)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:800] if lines else ""


def run_child(
    command: list[str],
    log: Path,
    *,
    threads: int,
    nice: int,
    stop: threading.Event,
    why_stopped: Callable[[], str],
    poll: Callable[[], None] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Runs ``command`` niced in its own process group until it ends or ``stop`` is set.

    Args:
        command: The command line.
        log: Its stdout and stderr go here.
        threads: Thread-pool limit for the child.
        nice: nice increment of the child.
        stop: Set to stop the child (SIGTERM to its group, SIGKILL after 10 s).
        why_stopped: The reason when ``stop`` is set (for :class:`Cancelled`).
        poll: Called about twice a second while the child runs (progress / feedback).
        cwd: Working directory.
        env: Extra environment variables.

    Raises:
        Cancelled: ``stop`` was set.
        ChildError: The child exited non-zero or could not start (its last log line).
    """
    try:
        with open(log, "ab") as out:
            # Own session = own process group (no preexec_fn: unsafe in a threaded node).
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=child_env(threads, env), cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
    except OSError as err:
        raise ChildError(f"cannot start {Path(command[0]).name}: {err}") from err
    if nice:  # at once, before the child's imports start its thread pools (they inherit it)
        lower_priority(proc.pid, nice)
    try:
        while proc.poll() is None:
            if stop.wait(0.5):
                _terminate(proc)
                raise Cancelled(why_stopped())
            if poll is not None:
                poll()
    finally:
        if proc.poll() is None:
            _terminate(proc)
    if poll is not None:
        poll()
    if proc.returncode != 0:
        detail = last_error_line(log) or f"exit code {proc.returncode}"
        if proc.returncode < 0:
            detail = f"killed by signal {-proc.returncode} ({detail})"
        raise ChildError(detail)


def lower_priority(pid: int, nice: int) -> None:
    """Raises the nice value of ``pid`` by ``nice``, and of its session's autogroup where there is one.

    The child is a session of its own (``start_new_session``), and with the kernel's autogroup
    scheduling (``/proc/sys/kernel/sched_autogroup_enabled``, on by default in Ubuntu) the CPU is
    shared between sessions first: a process nice only counts inside its own session, so the child
    would still weigh as much as the node's whole session (seen on a 2-core Xeon: the training child
    at nice 10, its autogroup at nice 0). The autogroup's own nice value (``/proc/PID/autogroup``)
    is what weighs it against the node. Best effort: a child that already exited, or a kernel
    without autogroups, is left as it is.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0) + int(nice))
    except OSError:
        return  # already exited; its exit code tells
    try:
        with open(f"/proc/{pid}/autogroup", "w") as handle:
            handle.write(str(min(19, max(-20, os.getpriority(os.PRIO_PROCESS, pid)))))
    except OSError:
        pass  # no autogroup scheduling (kernel option), or not Linux


def _terminate(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
