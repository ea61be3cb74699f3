"""The backend options that ``flowclas-eval`` and ``flowclas-predict`` share, read from the backend table."""

from __future__ import annotations

import argparse

from flowclas_ros.runtime.registry import backend_names
from flowclas_ros.runtime.threads import thread_arg


def add_backend_arguments(
    group: argparse._ActionsContainer, threshold_help: str, threads_note: str = ""
) -> None:
    """Adds ``--backend``, ``--device``, ``--threshold`` and ``--threads`` / ``--num-threads``.

    ``--backend`` offers the backends in the table when the parser is built, so a backend
    registered at run time is offered too.

    Args:
        group: The parser or argument group to add them to.
        threshold_help: What ``--threshold`` is used for in this CLI.
        threads_note: Extra words for ``--threads``' help.
    """
    group.add_argument(
        "--backend", default="torch", choices=backend_names(), help="inference backend (default: %(default)s)"
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument("--threshold", type=float, metavar="T", help=threshold_help)
    group.add_argument(
        "--threads",
        "--num-threads",
        dest="threads",
        type=thread_arg,
        default="auto",
        metavar="N",
        help="CPU threads of the backend: auto (default: the CPUs this process may use) or N"
        f"{threads_note}; pools never spin while idle (docs/DEPLOY.md)",
    )
