"""One-line errors for the command-line tools: usage errors and failures each fit one stderr line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see --help)`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def one_line(err: BaseException) -> str:
    """The exception's message with its whitespace and newlines collapsed; its type if empty."""
    return " ".join(str(err).split()) or type(err).__name__
