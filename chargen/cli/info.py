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

    data = ckpt.load(checkpoint)
    params = sum(t.numel() for t in data["model"].values())
    tok = data["tokenizer"]
    vocab = len(tok["chars"]) + 1 if tok["kind"] == "char" else tok["vocab_size"]
    trainer, metrics = data["trainer"], data["metrics"]
    best = trainer["best_val"]
    summary = {
        "checkpoint": str(checkpoint),
        "format_version": data["format_version"],
        "corpus": data["corpus"],
        "tokenizer": {"kind": tok["kind"], "vocab_size": vocab},
        "parameters": params,
        "model": data["model_config"],
        "train": data["train_config"],
        "step": trainer["step"],
        "epoch": metrics[-1]["epoch"] if metrics else 0,
        "elapsed_s": round(trainer["elapsed"], 1),
        "best_val_loss": round(best, 5) if math.isfinite(best) else None,
        "best_val_bpc": round(best / math.log(2), 5) if math.isfinite(best) else None,
    }
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    m, t = summary["model"], summary["train"]
    lines = [
        f"checkpoint   {checkpoint} (format {summary['format_version']})",
        f"corpus       {data['corpus']['name']}: {data['corpus']['train_chars']:,} train + "
        f"{data['corpus']['val_chars']:,} val characters",
        f"tokenizer    {tok['kind']}, vocabulary {vocab:,}",
        f"model        {m['layers']}x{m['hidden']} {m['cell']}, embed {m['embed']}, dropout {m['dropout']}: "
        f"{params:,} parameters",
        f"training     batch {t['batch_size']} x {t['seq_len']}, lr {t['lr']:g}, weight decay {t['weight_decay']:g}, "
        f"seed {t['seed']}",
        f"progress     step {summary['step']:,}, epoch {summary['epoch']:.2f}, {summary['elapsed_s']:.0f}s",
    ]
    if summary["best_val_loss"] is not None:
        lines.append(f"best val     {summary['best_val_loss']:.4f} nats/char ({summary['best_val_bpc']:.4f} bpc)")
    click.echo("\n".join(lines))
