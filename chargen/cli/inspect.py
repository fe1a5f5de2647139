"""`chargen inspect`: one self-contained HTML page that shows what a model does inside, on a text."""

from __future__ import annotations

from pathlib import Path

import click

from chargen.cli import cli
from chargen.cli.options import device_option, resolve_checkpoint
from chargen.config import INSPECT_CHARS, INSPECT_MAX_CHARS, INSPECT_UNITS


@cli.command("inspect")
@click.option(
    "-c",
    "--checkpoint",
    "checkpoints",
    type=click.Path(),
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
@click.option("--overwrite", is_flag=True, help="Replace --out even if it is a file chargen did not write.")
@device_option
def inspect(checkpoints, file, out, chars, units, device, overwrite) -> None:
    """Write a page that shows a model reading FILE: surprisal, cells and gates, span search, gate
    saturation, how far back it looks, and its training curves. The page is one file that works
    offline in any browser.

    \b
      chargen inspect -c checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt
      chargen inspect -c lstm/best.pt -c gru/best.pt -c rnn/best.pt some.txt -o compare.html
    """
    import time

    from chargen.cli import console
    from chargen.data import corpus_files, read_text
    from chargen.files import atomic_write
    from chargen.inspect.page import load, mib, render, report

    target = Path(out) if out else Path(f"{Path(file).stem or 'inspect'}.html")
    refuse_to_replace(target, Path(file), overwrite)  # before the model reads anything: a second may pass
    paths = [resolve_checkpoint(c) for c in checkpoints] if checkpoints else [resolve_checkpoint(None)]
    text = read_text(corpus_files(file), chars)
    started = time.perf_counter()
    models = load(paths, device)
    if len(text) > INSPECT_MAX_CHARS:  # the text is read up to --chars
        console.warn(too_big(lambda n: mib(render(report(models, text, chars=n, units=units))), len(text)))
    page = render(report(models, text, chars=chars, units=units))
    with atomic_write(target) as f:  # a page that fails half-way leaves the old one whole
        f.write(page.encode("utf-8"))
    console.info(
        f"wrote {target} ({mib(page):.1f} MiB, {min(chars, len(text)):,} characters, "
        f"{time.perf_counter() - started:.1f}s): open it in a browser"
    )


def too_big(size_of, chars: int) -> str:
    """The warning for a page of `chars` characters, its size foretold from two small pages (`size_of(n)` MiB):
    a browser holds several times a page's size while it opens it, and the work is done before it is written."""
    small, large = INSPECT_MAX_CHARS // 4, INSPECT_MAX_CHARS // 2
    at_small, at_large = size_of(small), size_of(large)
    foretold = at_large + (at_large - at_small) / (large - small) * (chars - large)
    return (
        f"{chars:,} characters make a page of about {foretold:.1f} MiB, which a browser may open slowly or not at all; "
        f"pages of up to {INSPECT_MAX_CHARS:,} characters open quickly (--chars)"
    )


PAGE_MARK = "<title>chargen inspect</title>"  # in the head of every page this command writes


def refuse_to_replace(target: Path, source: Path, overwrite: bool) -> None:
    """Never write over the text being read; replace another file only if it is an inspect page or when told."""
    from chargen.errors import ChargenError

    if target.exists() and source.exists() and target.resolve() == source.resolve():
        raise ChargenError(f"{target} is the text being read: give the page another name with -o")
    if target.is_dir():
        raise ChargenError(f"{target} is a folder: give the page a file name with -o")
    if target.exists() and not overwrite:
        with open(target, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
        if PAGE_MARK not in head:
            raise ChargenError(
                f"{target} exists and is not an inspect page: give another name with -o, or --overwrite to replace it"
            )
