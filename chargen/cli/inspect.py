"""`chargen inspect`: one self-contained HTML page that shows what a model does inside, on a text."""

from __future__ import annotations

from pathlib import Path

import click

from chargen.cli import cli
from chargen.cli.options import device_option, resolve_checkpoint
from chargen.config import INSPECT_CHARS, INSPECT_UNITS


@cli.command("inspect")
@click.option(
    "-c",
    "--checkpoint",
    "checkpoints",
    type=click.Path(dir_okay=False),
    multiple=True,
    help="Checkpoint to inspect; give -c again for models whose look-back curves share the plot "
    "[default: the newest best.pt under checkpoints/, else the bundled model]",
)
@click.argument("file", type=click.Path())
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="The page to write  [default: FILE's name.html]")
@click.option(
    "--chars", type=click.IntRange(2), default=INSPECT_CHARS, show_default=True, help="Characters of FILE to read."
)
@click.option(
    "--units",
    type=click.IntRange(1),
    default=INSPECT_UNITS,
    show_default=True,
    help="Units per layer whose cell state and gates go in the page (the hidden state goes in for all).",
)
@device_option
def inspect(checkpoints, file, out, chars, units, device) -> None:
    """Write a page that shows a model reading FILE: surprisal, cells and gates, span search, gate
    saturation, how far back it looks, and its training curves. The page is one file that works
    offline in any browser.

    \b
      chargen inspect -c checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt
      chargen inspect -c lstm/best.pt -c gru/best.pt -c rnn/best.pt some.txt -o compare.html
    """
    import time

    from chargen.cli import console
    from chargen.data import corpus_files, read_chunks
    from chargen.inspect.page import load, mib, render, report

    paths = [resolve_checkpoint(c) for c in checkpoints] if checkpoints else [resolve_checkpoint(None)]
    text = ""
    for chunk in read_chunks(corpus_files(file)):
        text += chunk
        if len(text) >= chars:
            break
    started = time.perf_counter()
    page = render(report(load(paths, device), text, chars=chars, units=units))
    target = Path(out) if out else Path(f"{Path(file).stem or 'inspect'}.html")
    target.write_text(page, encoding="utf-8")
    console.info(
        f"wrote {target} ({mib(page):.1f} MiB, {min(chars, len(text)):,} characters, "
        f"{time.perf_counter() - started:.1f}s): open it in a browser"
    )
