"""Runs the demo's stages in order, skipping those whose stamp says they are up to date."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flowclas_ros.demo.stamps import StampStore


class DemoError(RuntimeError):
    """A stage failed; the message says which and why (one line)."""


@dataclass
class Stage:
    """One step of the demo.

    Attributes:
        name: Short id (stamp file name), e.g. ``train``.
        title: What it does, for the log and the summary.
        key: Input hash (:func:`~flowclas_ros.demo.stamps.stage_key`); computed just before
            the stage is considered, after its upstream stages ran.
        outputs: Files that must all exist for the stage to count as done.
        run: Does the work.
        clean: Folders removed before a fresh run (partial or stale output).
        resumable: Keep ``clean`` folders when the stage was started with the same key
            and did not finish (``flowclas-train`` resumes from its state).
    """

    name: str
    title: str
    key: Callable[[], str]
    outputs: Sequence[Path]
    run: Callable[[], None]
    clean: Sequence[Path] = ()
    resumable: bool = False


@dataclass
class StageResult:
    """What happened to one stage in this invocation."""

    name: str
    title: str
    ran: bool
    wall_s: float
    produced_wall_s: float | None = None  # wall time of the run that produced the output


@dataclass
class StageRunner:
    """Runs stages; ``results`` collects their outcome and wall time."""

    stamps: StampStore
    log: Callable[[str], None] = print
    results: list[StageResult] = field(default_factory=list)

    def run(self, stage: Stage) -> StageResult:
        """Runs ``stage`` unless it is up to date.

        Raises:
            DemoError: The stage failed (its stamp stays "started").
        """
        start = time.perf_counter()
        key = stage.key()
        outputs_there = all(Path(p).exists() for p in stage.outputs)
        if self.stamps.is_done(stage.name, key) and outputs_there:
            result = StageResult(
                stage.name,
                stage.title,
                False,
                time.perf_counter() - start,
                self.stamps.read(stage.name).get("wall_s"),
            )
            self.log(f"[demo] {stage.name}: up to date, skipped ({stage.title})")
            self.results.append(result)
            return result
        resume = stage.resumable and self.stamps.interrupted_with(stage.name, key)
        if not resume:
            for folder in stage.clean:
                shutil.rmtree(folder, ignore_errors=True)
        self.log(f"[demo] {stage.name}: {stage.title}" + (" (resuming)" if resume else ""))
        self.stamps.mark_started(stage.name, key)
        stage.run()
        missing = [str(p) for p in stage.outputs if not Path(p).exists()]
        if missing:
            raise DemoError(f"stage {stage.name} finished without writing {', '.join(missing)}")
        wall = time.perf_counter() - start
        self.stamps.mark_done(stage.name, key, wall)
        self.log(f"[demo] {stage.name}: done in {wall:.1f} s")
        result = StageResult(stage.name, stage.title, True, wall, wall)
        self.results.append(result)
        return result


def find_executable(name: str) -> str | None:
    """A console script of this environment (beside the running Python first, then on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def threads_env(threads: int) -> dict[str, str]:
    """The environment that caps torch / OpenMP threads of a process (and the processes it starts)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_cli(cmd: Sequence[str | Path], *, threads: int, what: str, env: dict[str, str] | None = None) -> None:
    """Runs one of the project's CLIs, its output passed through; DemoError on failure.

    ``threads`` caps torch / OpenMP threads of the process (and of the processes it starts).
    """
    argv = [str(c) for c in cmd]
    exe = find_executable(argv[0])
    if exe is None:
        raise DemoError(
            f"{what}: {argv[0]} not found on PATH; run 'make bootstrap' and 'source scripts/env.sh'"
        )
    full_env = {**os.environ, **(env or {}), **threads_env(threads)}
    print(f"[demo]   $ {shlex.join(argv)}", flush=True)
    rc = subprocess.run([exe, *argv[1:]], env=full_env).returncode
    if rc != 0:
        raise DemoError(f"{what} failed: {argv[0]} exited with code {rc} (command: {shlex.join(argv)})")
