"""`chargen info`: what a checkpoint holds: configs, vocabulary, parameters, steps, best validation loss."""

from __future__ import annotations

import json
import math

import click

from chargen.cli import cli


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object to stdout.")
def info(checkpoint, as_json) -> None:
    """Describe CHECKPOINT.

    \b
      chargen info checkpoints/tinyshakespeare/best.pt
    """
    from chargen import checkpoint as ckpt
    from chargen.training import sizing

    saved = ckpt.read(checkpoint)
    best, m, t = saved.best_val, saved.model_config, saved.train_config
    summary = saved.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    c = saved.corpus
    lines = [
        f"checkpoint   {saved.path}",
        f"corpus       {c.name}: {c.train_chars:,} train + {c.val_chars:,} val characters",
        f"tokenizer    {saved.tokenizer.kind}, vocabulary {saved.vocab_size:,}",
        *(
            [
                f"line mode    {len(saved.lines.train):,} distinct training and {len(saved.lines.val):,} validation "
                f"lines, each read from a {t.line_state} state"
            ]
            if saved.lines is not None
            else []
        ),
        f"model        {m.summary()}, embed {m.embed}: {saved.parameters:,} parameters",
        f"regularised  {sizing.regularised({**m.to_dict(), **t.to_dict()})}",
        f"training     batch {t.batch_size} x {t.seq_len}, lr {t.lr:g}, weight decay {t.weight_decay:g}, seed {t.seed}",
        f"progress     step {summary['step']:,}, epoch {summary['epoch']:.2f}, {summary['elapsed_s']:.0f}s",
    ]
    lines += [f"{'fine-tuned' if k == 0 else '':13}{_ancestor(a)}" for k, a in enumerate(saved.lineage)]
    if t.chosen:
        lines.append(f"chosen       {t.chosen} (--size auto)")
    if best is not None:
        lines.append(f"best val     {best:.4f} nats/char ({best / math.log(2):.4f} bpc)")
    if saved.averaged:
        lines.append(f"weights      the moving average (--average {t.average:g}), which scored better than the trained")
    click.echo("\n".join(lines))


def _ancestor(record: dict) -> str:
    """'from shakespeare (tinyshakespeare, step 1,958, sha256 3f2a91c0d4e5), 24 characters added'"""
    facts = [str(record.get("corpus"))]
    facts += [f"step {record['steps']:,}"] if isinstance(record.get("steps"), int) else []
    facts += [f"sha256 {str(record['sha256'])[:12]}"] if record.get("sha256") else []
    added = record.get("added")
    return f"from {record.get('name')} ({', '.join(facts)})" + (f", {added} characters added" if added else "")
