"""A child process whose output goes to a log file, stopped the way ROS nodes expect (SIGINT first).

Shared by the demo's live stage (node + recorder) and ``flowclas-eval --live`` (the node it starts).
No ROS import: the children are separate processes.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import IO


class LoggedProcess:
    """``cmd`` as a child process with stdout and stderr in ``log_path``.

    Subclasses name the process (``what``, used in errors), the exception
    :meth:`check_alive` raises (``error``) and how many log lines it quotes.
    """

    what = "process"
    error: type[Exception] = RuntimeError
    tail_lines = 1

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.cmd, self.log_path = cmd, log_path
        self._log: IO[str] = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def tail(self, n: int = 1) -> str:
        """The last ``n`` non-empty lines of the log, joined by `` | ``."""
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "no log"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-n:]) or "no output"

    def check_alive(self) -> None:
        """Raises ``error`` (quoting the log's last ``tail_lines`` lines) if the process has exited."""
        if self.proc.poll() is not None:
            raise self.error(
                f"{self.what} exited with code {self.proc.returncode} ({self.tail(self.tail_lines)}); "
                f"log: {self.log_path}"
            )

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGINT, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
