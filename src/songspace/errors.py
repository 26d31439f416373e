"""The root of user errors, and how a command or stage reports one.

A `UserError` is a problem the user can fix (a bad params.yaml value, a missing or corrupt
file, a stale index); its message names the key or the file. Commands and stages print it as
one line and exit with `EXIT_USER_ERROR`, never with a traceback. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input, files or settings; the message says which and how to fix it."""


def one_line(err: BaseException) -> str:
    """The first line of an error's message (its class name when it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def run_stage(main: Callable[[], int | None], name: str) -> int:
    """Run a stage's main(); a `UserError` becomes `name: message` on stderr and exit code 2."""
    try:
        return int(main() or 0)
    except UserError as err:
        print(f"{name}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
