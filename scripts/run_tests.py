"""Runs the test suite one test file per pytest process (``make test``), then one summary line.

Why not one process: on 2026-12-07 the single-process suite died with SIGSEGV at about 85 %
(three runs, three places: test_runtime_torchfree, then test_training_bags; no Python traceback
even under ``-X faulthandler``), while every file passes on its own and the runtime/node/learn
files pass together. Something left in the process by an earlier file (rclpy, OpenVINO, ONNX
Runtime and torch all live in it) is the suspect; the cause is not found yet (session note of
2026-12-07). One process per file also means no test depends on another file's leftovers.

Files run ``--jobs`` at a time (default: the usable CPUs, at most 2), because a file's process
spends much of its time starting Python, importing torch and rclpy, or waiting on a subprocess or
a topic: two at a time cut the suite's tests from 18.7 to 11.7-12.5 minutes on a 2-core AMD EPYC
(Zen 4, 2026-12-07). A file marked ``pytestmark = ... pytest.mark.alone`` (it bounds a latency
against the CPU, or races signals against a child process) runs afterwards with nothing beside it.
Every file gets its own ROS domain (``test/conftest.py``), so files running side by side never see
each other's topics.

    python scripts/run_tests.py                 # every test/test_*.py
    python scripts/run_tests.py --jobs 1        # one file at a time
    python scripts/run_tests.py ARGS...         # plain pytest with ARGS (one process)
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ("passed", "failed", "skipped", "errors", "error", "xfailed", "xpassed")
ALONE = re.compile(r"pytest\.mark\.alone\b")


def default_jobs() -> int:
    """The usable CPUs (a container's or ``taskset``'s limit), at most 2.

    More files at once would make the CPU-bound ones (training, exports) starve each other.
    """
    from flowclas_ros.runtime.cpu import usable_cpus  # torch-free; the environment has the package

    return min(2, usable_cpus())


def run_file(rel: Path) -> tuple[Path, int, str, float]:
    """One pytest process for one file: (file, exit status, its output, seconds)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", str(rel)], cwd=ROOT, capture_output=True, text=True
    )
    return rel, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start


def run_suite(jobs: int) -> int:
    """Every test file: the shared ones ``jobs`` at a time, then the ``alone`` ones one by one."""
    files = sorted((ROOT / "test").glob("test_*.py"))
    alone: list[Path] = []
    shared: list[Path] = []
    for path in files:
        (alone if ALONE.search(path.read_text(encoding="utf-8")) else shared).append(path.relative_to(ROOT))
    # The largest files first, so that a long file does not start last and run on its own.
    shared.sort(key=lambda rel: (ROOT / rel).stat().st_size, reverse=True)
    totals = dict.fromkeys(COUNTS, 0)
    broken: list[str] = []
    start = time.monotonic()

    def report(rel: Path, status: int, output: str, seconds: float) -> None:
        tail = [line for line in output.splitlines() if line.strip()][-1:] or ["(no output)"]
        for count, kind in re.findall(r"(\d+) (passed|failed|skipped|errors|error|xfailed|xpassed)", tail[0]):
            totals[kind] += int(count)
        if status != 0:
            broken.append(str(rel))
            print(output, flush=True)
            print(f"FAILED FILE {rel} (exit {status})", flush=True)
        print(f"{rel}: {tail[0].strip('= ')} [{seconds:.0f} s]", flush=True)

    print(f"{len(shared)} files {jobs} at a time, then {len(alone)} alone (pytest.mark.alone)", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in as_completed([pool.submit(run_file, rel) for rel in shared]):
            report(*future.result())
    for rel in alone:
        report(*run_file(rel))
    errors = totals["errors"] + totals["error"]
    minutes = (time.monotonic() - start) / 60
    print(f"{len(files)} test files in {minutes:.1f} min; files failing: {', '.join(broken) or 'none'}")
    failed = max(totals["failed"] + errors, len(broken))  # a crashed file counts once at least
    line = f"{totals['passed']} passed, {failed} failed"
    print(line + (f", {totals['skipped']} skipped" if totals["skipped"] else ""))
    return 1 if broken or failed else 0


def main(argv: list[str]) -> int:
    """Runs the suite file by file (no ``argv``, or ``--jobs N``) or pytest with ``argv``."""
    if argv[:1] == ["--jobs"] and len(argv) == 2 and argv[1].isdigit() and int(argv[1]) > 0:
        return run_suite(int(argv[1]))
    if argv:
        return subprocess.call([sys.executable, "-m", "pytest", *argv], cwd=ROOT)
    return run_suite(default_jobs())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
