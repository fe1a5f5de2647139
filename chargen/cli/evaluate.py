"""`chargen eval`: nats and bits per character of a text under a model, state carried over the whole file."""

from __future__ import annotations

import json

import click

from chargen.cli import cli
from chargen.cli.options import checkpoint_option, device_option, learn_config, learn_options, resolve_checkpoint


@cli.command("eval")
@checkpoint_option
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
@click.option(
    "--dynamic", is_flag=True, help="Learn while reading: each window is scored, then learnt from (one stream)."
)
@learn_options
@device_option
def evaluate(checkpoint, file, as_json, dynamic, device, **learning) -> None:
    """Score FILE under a model: nats/char and bits/char, every character once.

    With --dynamic, a copy of the model takes a small gradient step after each window it has
    scored (dynamic evaluation), so what the text repeats becomes likely: no character's score
    depends on a step that saw it. The checkpoint never changes.

    \b
      chargen eval -c checkpoints/tinyshakespeare/best.pt corpora/tinyshakespeare.txt --json
      chargen eval -c checkpoints/code/best.pt tail.py --dynamic
    """
    from chargen.cli import console
    from chargen.generate import Generator
    from chargen.score import score_file, trained_share

    settings = learn_config(learning, dynamic, "--dynamic")  # a bad flag is told before the model loads
    generator = Generator.load(resolve_checkpoint(checkpoint), device)
    score = score_file(generator, file, settings if dynamic else None)
    if score.unknown:
        console.warn(
            f"{file} has characters the model never saw, scored as unknown: {' '.join(map(repr, score.unknown))}"
        )
    saved = generator.checkpoint
    share = trained_share(saved, file) if saved is not None else None
    if share is not None and share >= 0.05:
        best = f" (its validation loss: {saved.best_val:.4f})" if saved.best_val is not None else ""
        console.warn(
            f"about {share:.0%} of {file} is text this model was trained on: the figure says how well it learnt "
            f"that text, not how it does on text it has not seen{best}"
        )
    nats, bits = score.nats_per_char, score.bits_per_char
    how = score.dynamic.describe() if score.dynamic else None
    if as_json:
        result = {"nats_per_char": round(nats, 6), "bits_per_char": round(bits, 6), "chars": score.chars}
        result["trained_share"] = None if share is None else round(share, 3)
        click.echo(json.dumps({**result, "dynamic": score.dynamic.to_dict() if score.dynamic else None}))
    else:
        mode = f", dynamic: {how}" if how else ""
        click.echo(f"{nats:.4f} nats/char  {bits:.4f} bits/char  ({score.chars:,} characters of {file}{mode})")
