"""`chargen eval`: nats and bits per character of a text under a model, state carried over the whole file."""

from __future__ import annotations

import json
import math

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
    import numpy as np

    from chargen import console
    from chargen.data import corpus_files, read_chunks
    from chargen.generate import Generator
    from chargen.train import evaluate as score
    from chargen.train import scored_chars

    generator = Generator.load(resolve_checkpoint(checkpoint), device)
    tok = generator.tokenizer
    chars, unknown, parts = 0, {}, []
    for chunk in read_chunks(corpus_files(file)):
        chars += len(chunk)
        unknown.update(dict.fromkeys(tok.unknown(chunk)))
        parts.append(tok.encode(chunk))
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if len(ids) < 2:
        from chargen.errors import CorpusError

        raise CorpusError(f"{file} is too short to score: it needs at least two characters")
    if unknown:
        console.warn(f"{file} has characters the model never saw, scored as unknown: {' '.join(map(repr, unknown))}")
    nats = score(generator.model, ids, generator.device) / scored_chars(tok, ids, chars)
    result = {"nats_per_char": round(nats, 6), "bits_per_char": round(nats / math.log(2), 6), "chars": chars}
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{nats:.4f} nats/char  {nats / math.log(2):.4f} bits/char  ({chars:,} characters of {file})")
