"""The `chargen` command: a Click group of thin commands that parse, call the library and print.

Every user mistake becomes one line on stderr and a non-zero exit; a traceback appears
only with --debug or CHARGEN_DEBUG=1. Commands import torch in their bodies, so
`chargen --help` answers at once.
"""

from __future__ import annotations

import os
import sys

import click

from chargen import __version__
from chargen.errors import ChargenError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _peer_gone(e: Exception) -> bool:
    from chargen.training.distributed import peer_gone

    return peer_gone(e)


class Group(click.Group):
    """Turns the library's errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            if ctx.params.get("debug") or os.environ.get("CHARGEN_DEBUG"):
                raise
            from chargen.cli import console

            if isinstance(e, ChargenError):
                console.error(self._flagged(ctx, e))
                ctx.exit(e.exit_code)
            if isinstance(e, OSError):
                console.error(
                    f"{e.strerror or e}: {e.filename or ''}".rstrip(": ") + " (check the path and its permissions)"
                )
                ctx.exit(1)
            if os.environ.get("WORLD_SIZE", "1") != "1" and _peer_gone(e):  # torchrun: the fault is elsewhere
                console.error("another process of this torchrun run stopped (its own lines say why), so this one did")
                ctx.exit(1)
            console.error(
                f"internal error: {type(e).__name__}: {e}; run again with --debug for the traceback and report it"
            )
            ctx.exit(1)
        except KeyboardInterrupt:
            sys.stderr.write("\ninterrupted\n")
            ctx.exit(130)

    def _flagged(self, ctx: click.Context, e: ChargenError) -> str:
        """The error's message, its setting named by the flag a person types (`temp` -> `--temp`)."""
        message, setting = str(e), getattr(e, "setting", None)
        command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        if not setting or command is None or not message.startswith(setting):
            return message
        for param in command.params:
            if param.name in (setting, f"{setting}_") and isinstance(param, click.Option):
                flag = max(param.opts, key=len)  # the long form
                return flag + message[len(setting) :]
        return message


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version")
@click.option("--debug", is_flag=True, help="Show full tracebacks (also CHARGEN_DEBUG=1).")
def cli(debug: bool) -> None:
    """Train character-level language models on any text, then sample and chat with them.

    \b
      chargen train corpora/tinyshakespeare.txt      # 5 minutes on a laptop
      chargen sample --temp 0.8 --prime "ROMEO:"
      chargen chat --user-prefix "ROMEO:\\n" --bot-prefix "JULIET:\\n"
      chargen eval -c checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt
      chargen info checkpoints/tinyshakespeare/best.pt
      chargen serve                                  # an HTTP API and a page at localhost:8000
    """


def main() -> None:
    import signal

    if hasattr(signal, "SIGPIPE"):  # `chargen sample | head` ends quietly, as other Unix tools do
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    usable_streams()
    cli(prog_name="chargen")


STDOUT_CLOSED = False  # set when chargen started with no standard output (`>&-`)


def usable_streams() -> None:
    """A closed standard stream reads as empty and writes nowhere; input that is not valid UTF-8 arrives
    with U+FFFD in place of the bad bytes; text the terminal's encoding cannot show is escaped, not fatal."""
    global STDOUT_CLOSED
    STDOUT_CLOSED = sys.stdout is None
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))
    for stream, errors in ((sys.stdin, "replace"), (sys.stdout, "backslashreplace")):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=errors)


from chargen.cli import chat, evaluate, export, info, inspect, sample, serve, train  # noqa: E402, F401  (each registers its command)
