"""The one owner of the terminal: status, warnings and errors on stderr (the progress bar is in `progress`).

Generated text goes to stdout through `sys.stdout` alone; everything here writes to stderr,
with colour and a live bar only when stderr is a terminal.
"""

from __future__ import annotations

import sys
from functools import cache

from rich.console import Console
from rich.markup import escape


@cache
def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def info(text: str) -> None:
    stderr().print(escape(text), style="dim")


def warn(text: str) -> None:
    stderr().print(f"[yellow]warning:[/] {escape(text)}")


def error(text: str) -> None:
    stderr().print(f"[bold red]error:[/] {escape(text)}", soft_wrap=True)


def rate(chars_per_sec: float) -> str:
    return f"{chars_per_sec / 1000:.1f}k chars/s"


def write(text: str) -> None:
    """Generated text, to stdout, shown at once."""
    sys.stdout.write(text)
    sys.stdout.flush()
