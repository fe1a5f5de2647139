"""`chargen eval`: nats and bits per character of a text under a model, state carried over the whole file."""

from __future__ import annotations

import json

import click

from chargen.cli import cli
from chargen.cli.options import checkpoint_option, device_option, resolve_checkpoint


@cli.command("eval")
@checkpoint_option
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
@device_option
def evaluate(checkpoint, file, as_json, device) -> None:
    """Score FILE under a model: nats/char and bits/char, every character once.

    \b
      chargen eval -c checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt --json
    """
    from chargen import console
    from chargen.generate import Generator
    from chargen.score import score_file

    generator = Generator.load(resolve_checkpoint(checkpoint), device)
    score = score_file(generator, file)
    if score.unknown:
        console.warn(
            f"{file} has characters the model never saw, scored as unknown: {' '.join(map(repr, score.unknown))}"
        )
    nats, bits = score.nats_per_char, score.bits_per_char
    if as_json:
        click.echo(json.dumps({"nats_per_char": round(nats, 6), "bits_per_char": round(bits, 6), "chars": score.chars}))
    else:
        click.echo(f"{nats:.4f} nats/char  {bits:.4f} bits/char  ({score.chars:,} characters of {file})")
