"""The one owner of the terminal: its two consoles, and the escape codes the chat's colours and the bar's cursor use.

Generated text goes to stdout (`write`, and `stdout()` for a table of it); status, warnings and
errors to stderr, with colour and a live bar only when stderr is a terminal.
"""

from __future__ import annotations

import sys
from functools import cache

from rich.console import Console
from rich.markup import escape

ANSI = {  # raw codes, for text streamed a piece at a time (a console would style each piece on its own)
    "answer": "\x1b[36m",
    "prefix": "\x1b[1;36m",
    "dim": "\x1b[2m",
    "reset": "\x1b[0m",
    "clear": "\x1b[2J\x1b[H",
    "cursor": "\x1b[?25h",  # show it again (a live bar hides it)
}


@cache
def stdout() -> Console:
    return Console(highlight=False)


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
